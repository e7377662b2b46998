/*
 * bd_form.h: builds URLs and application/x-www-form-urlencoded bodies in
 * a caller buffer.
 *
 * bd_twapi.c builds the Twilio request URLs and bodies with it, bd_oai.c
 * the "?model=" query.  Like the proto writer, a builder that overflowed
 * stays failed, so the caller checks once at the end.  libc only.
 */

#ifndef BD_FORM_H
#define BD_FORM_H

#include <stddef.h>


typedef struct {
    char    *start;
    size_t   len;
    size_t   size;
    int      failed;
    int      params;       /* form parameters added so far */
} bd_form_t;


void bd_form_init(bd_form_t *f, char *buf, size_t size);

/* appends s as it is */
void bd_form_raw(bd_form_t *f, const char *s, size_t len);

/*
 * Appends s percent-encoded: everything but the RFC 3986 unreserved
 * characters, so "+" becomes %2B and a space %20.  Good for a form value
 * and for one URL path segment or query value.
 */
void bd_form_escape(bd_form_t *f, const char *s, size_t len);

/* appends "name=value" (with "&" before all but the first), value escaped */
void bd_form_param(bd_form_t *f, const char *name, const char *value,
    size_t len);

/* returns 1 and leaves a NUL-terminated string, or 0 if it overflowed */
int bd_form_done(bd_form_t *f);


#endif /* BD_FORM_H */
