/*
 * bd_b64.h: base64 (RFC 4648, standard alphabet) into caller buffers.
 *
 * Caller audio goes out as base64 inside input_audio_buffer.append, and
 * assistant audio comes back as base64 deltas (bd_oai_event.c).  Neither
 * direction allocates.  libc only.
 */

#ifndef BD_B64_H
#define BD_B64_H

#include <stddef.h>
#include <stdint.h>


/* encoded size of n bytes, padding included */
#define BD_B64_ENCODED_LEN(n)  ((((n) + 2) / 3) * 4)

/* the most bytes n base64 characters can decode to */
#define BD_B64_DECODED_MAX(n)  ((((n) + 3) / 4) * 3)


/* writes BD_B64_ENCODED_LEN(len) characters, no NUL; returns that count */
size_t bd_b64_encode(char *dst, const uint8_t *src, size_t len);

/*
 * Decodes len characters into dst, which holds BD_B64_DECODED_MAX(len)
 * bytes.  Padding is optional but, when present, must close the input.
 * Returns the decoded length, or -1 for input that is not base64.
 */
long bd_b64_decode(uint8_t *dst, const char *src, size_t len);


#endif /* BD_B64_H */
