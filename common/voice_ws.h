/*
 * voice_ws.h: the RFC 6455 frame parser and frame writers.
 *
 * Leaf code: libc types only, no nginx header, so it is unit tested and
 * fuzzed outside nginx.  nginx's media WebSocket (ngx_http_voice_ws.c)
 * reads Twilio's frames with it as a server; the benchmark tools use it as
 * a client (bench_load.c, facing nginx) and as a server (the fake OpenAI,
 * facing bridged's libwebsockets).
 *
 * The parser is strict: it refuses unmasked client frames (masked server
 * frames, for a client's parser), set RSV bits
 * (no extension is ever negotiated), unknown opcodes, fragmented or long
 * (> 125 bytes) control frames, 64-bit lengths with the top bit set,
 * continuation frames with no message to continue and data frames inside a
 * fragmented message, text that is not UTF-8 (checked incrementally, across
 * fragments), close frames with a 1-byte payload, a code that may not be
 * sent or a non UTF-8 reason, and messages over the configured maximum.
 * Continuation frames are supported: a message is reassembled into the
 * caller's storage.
 */

#ifndef VOICE_WS_H
#define VOICE_WS_H

#include <stddef.h>
#include <stdint.h>


#define VOICE_WS_OP_CONT      0x0
#define VOICE_WS_OP_TEXT      0x1
#define VOICE_WS_OP_BINARY    0x2
#define VOICE_WS_OP_CLOSE     0x8
#define VOICE_WS_OP_PING      0x9
#define VOICE_WS_OP_PONG      0xa

#define VOICE_WS_CLOSE_NORMAL        1000
#define VOICE_WS_CLOSE_GOING_AWAY    1001
#define VOICE_WS_CLOSE_PROTOCOL      1002
#define VOICE_WS_CLOSE_UNSUPPORTED   1003
#define VOICE_WS_CLOSE_NO_STATUS     1005  /* never on the wire */
#define VOICE_WS_CLOSE_BAD_DATA      1007
#define VOICE_WS_CLOSE_POLICY        1008
#define VOICE_WS_CLOSE_TOO_BIG       1009
#define VOICE_WS_CLOSE_ERROR         1011
#define VOICE_WS_CLOSE_TRY_AGAIN     1013  /* over capacity */

/* which end's parser: a server reads masked frames, a client unmasked */
#define VOICE_WS_SERVER       0
#define VOICE_WS_CLIENT       1

#define VOICE_WS_MAX_CONTROL  125
#define VOICE_WS_MAX_HEADER   14    /* 2 + 8 + 4 */

/* room a server frame header takes at most (no mask) */
#define VOICE_WS_OUT_HEADER   10


/* what voice_ws_parse() returns */
#define VOICE_WS_AGAIN    0   /* all input consumed, need more */
#define VOICE_WS_MESSAGE  1   /* a whole text or binary message */
#define VOICE_WS_PING     2
#define VOICE_WS_PONG     3
#define VOICE_WS_CLOSE    4   /* the peer's close frame */
#define VOICE_WS_ERROR   -1   /* see parser->close_code, ->error */


typedef struct {
    int              opcode;      /* TEXT or BINARY for a MESSAGE */
    const uint8_t   *data;        /* message or control payload */
    size_t           len;
    uint16_t         close_code;  /* CLOSE: the code, or 1005 when absent */
} voice_ws_event_t;


typedef struct {
    /* the state handler that resumes; private to the codec */
    int              state;
    unsigned         client;      /* 1: VOICE_WS_CLIENT's parser */

    /* a frame header split across reads is saved here */
    uint8_t          hdr[VOICE_WS_MAX_HEADER];
    size_t           hdr_len;

    /* the frame being read */
    uint8_t          opcode;
    uint8_t          fin;
    uint8_t          mask[4];
    uint64_t         frame_len;
    uint64_t         frame_pos;

    /* the message being assembled (data frames) */
    uint8_t          msg_opcode;  /* 0 when no message is open */
    uint8_t         *msg;         /* caller storage, msg_max bytes */
    size_t           msg_max;
    size_t           msg_len;
    uint32_t         utf8_state;  /* incremental UTF-8 validator */

    /* a control frame's payload */
    uint8_t          ctrl[VOICE_WS_MAX_CONTROL];
    size_t           ctrl_len;

    /* accounting, for flood detection by the caller */
    uint64_t         data_bytes;  /* data frame payload bytes */
    uint64_t         ctrl_frames; /* control frames seen */
    uint64_t         frames;      /* all frames seen */

    /* set with VOICE_WS_ERROR */
    uint16_t         close_code;  /* 1002, 1007 or 1009 */
    const char      *error;       /* static text, for the log */
} voice_ws_parser_t;


/*
 * role is VOICE_WS_SERVER or VOICE_WS_CLIENT, the end that reads.  msg is
 * the storage for reassembled messages; a message longer than msg_max is
 * refused with 1009.  The parser does not own msg.
 */
void voice_ws_parser_init(voice_ws_parser_t *p, int role, uint8_t *msg,
    size_t msg_max);

/*
 * Consumes bytes from *pos up to end and stops at the first event, with
 * *pos advanced past the bytes used.  The caller loops until it gets
 * VOICE_WS_AGAIN.  An event's data stays valid until the next
 * call.  After VOICE_WS_ERROR the parser must not be called again.
 */
int voice_ws_parse(voice_ws_parser_t *p,
    const uint8_t **pos, const uint8_t *end, voice_ws_event_t *ev);

/*
 * 1 while a frame or a fragmented message is partly read: the caller
 * bounds how long that may last, so a peer cannot hold a connection open
 * by trickling a frame a byte at a time.
 */
int voice_ws_parser_busy(const voice_ws_parser_t *p);

/*
 * Writes an unmasked server frame header (FIN set) for a payload of len
 * bytes into buf, which has VOICE_WS_OUT_HEADER bytes; returns the header
 * size (2, 4 or 10).
 */
size_t voice_ws_frame_header(uint8_t *buf, int opcode, size_t len);

/*
 * Writes a whole client frame (FIN set) into dst: the header with the
 * 4-byte masking key, then the payload masked with it.  dst has len +
 * VOICE_WS_MAX_HEADER bytes; returns the frame size.
 */
size_t voice_ws_frame_masked(uint8_t *dst, int opcode, const uint8_t *payload,
    size_t len, const uint8_t *mask);

/*
 * Writes a close frame payload: the code in network order, then the
 * reason cut to fit 125 bytes in all (never inside a UTF-8 sequence).
 * buf has VOICE_WS_MAX_CONTROL bytes; returns the payload size.
 */
size_t voice_ws_close_payload(uint8_t *buf, uint16_t code, const char *reason);

/* 1 when the bytes are valid UTF-8 (RFC 3629: no overlongs, surrogates) */
int voice_ws_utf8_valid(const uint8_t *p, size_t len);


#endif /* VOICE_WS_H */
