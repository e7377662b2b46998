/*
 * ngx_http_voice_ws_codec.h: the RFC 6455 frame parser and frame writer
 * of the media WebSocket (server side).
 *
 * Leaf code: libc types only, no nginx header, so it is unit tested and
 * fuzzed outside nginx.  ngx_http_voice_ws.c feeds it the bytes it reads
 * and acts on the events it returns.
 *
 * The parser is strict: it refuses unmasked client frames, set RSV bits
 * (no extension is ever negotiated), unknown opcodes, fragmented or long
 * (> 125 bytes) control frames, 64-bit lengths with the top bit set,
 * continuation frames with no message to continue and data frames inside a
 * fragmented message, text that is not UTF-8 (checked incrementally, across
 * fragments), close frames with a 1-byte payload, a code that may not be
 * sent or a non UTF-8 reason, and messages over the configured maximum.
 * Continuation frames are supported: a message is reassembled into the
 * caller's storage.
 */

#ifndef NGX_HTTP_VOICE_WS_CODEC_H
#define NGX_HTTP_VOICE_WS_CODEC_H

#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_VOICE_WS_OP_CONT      0x0
#define NGX_HTTP_VOICE_WS_OP_TEXT      0x1
#define NGX_HTTP_VOICE_WS_OP_BINARY    0x2
#define NGX_HTTP_VOICE_WS_OP_CLOSE     0x8
#define NGX_HTTP_VOICE_WS_OP_PING      0x9
#define NGX_HTTP_VOICE_WS_OP_PONG      0xa

#define NGX_HTTP_VOICE_WS_CLOSE_NORMAL        1000
#define NGX_HTTP_VOICE_WS_CLOSE_GOING_AWAY    1001
#define NGX_HTTP_VOICE_WS_CLOSE_PROTOCOL      1002
#define NGX_HTTP_VOICE_WS_CLOSE_UNSUPPORTED   1003
#define NGX_HTTP_VOICE_WS_CLOSE_NO_STATUS     1005  /* never on the wire */
#define NGX_HTTP_VOICE_WS_CLOSE_BAD_DATA      1007
#define NGX_HTTP_VOICE_WS_CLOSE_POLICY        1008
#define NGX_HTTP_VOICE_WS_CLOSE_TOO_BIG       1009
#define NGX_HTTP_VOICE_WS_CLOSE_ERROR         1011
#define NGX_HTTP_VOICE_WS_CLOSE_TRY_AGAIN     1013  /* over capacity */

#define NGX_HTTP_VOICE_WS_MAX_CONTROL  125
#define NGX_HTTP_VOICE_WS_MAX_HEADER   14    /* 2 + 8 + 4 */

/* room a server frame header takes at most (no mask) */
#define NGX_HTTP_VOICE_WS_OUT_HEADER   10


/* what ngx_http_voice_ws_parse() returns */
#define NGX_HTTP_VOICE_WS_AGAIN    0   /* all input consumed, need more */
#define NGX_HTTP_VOICE_WS_MESSAGE  1   /* a whole text or binary message */
#define NGX_HTTP_VOICE_WS_PING     2
#define NGX_HTTP_VOICE_WS_PONG     3
#define NGX_HTTP_VOICE_WS_CLOSE    4   /* the peer's close frame */
#define NGX_HTTP_VOICE_WS_ERROR   -1   /* see parser->close_code, ->error */


typedef struct {
    int              opcode;      /* TEXT or BINARY for a MESSAGE */
    const uint8_t   *data;        /* message or control payload */
    size_t           len;
    uint16_t         close_code;  /* CLOSE: the code, or 1005 when absent */
} ngx_http_voice_ws_event_t;


typedef struct {
    /* the state handler that resumes; private to the codec */
    int              state;

    /* a frame header split across reads is saved here */
    uint8_t          hdr[NGX_HTTP_VOICE_WS_MAX_HEADER];
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
    uint8_t          ctrl[NGX_HTTP_VOICE_WS_MAX_CONTROL];
    size_t           ctrl_len;

    /* accounting, for flood detection by the caller */
    uint64_t         data_bytes;  /* data frame payload bytes */
    uint64_t         ctrl_frames; /* control frames seen */
    uint64_t         frames;      /* all frames seen */

    /* set with NGX_HTTP_VOICE_WS_ERROR */
    uint16_t         close_code;  /* 1002, 1007 or 1009 */
    const char      *error;       /* static text, for the log */
} ngx_http_voice_ws_parser_t;


/*
 * msg is the storage for reassembled messages; a message longer than
 * msg_max is refused with 1009.  The parser does not own msg.
 */
void ngx_http_voice_ws_parser_init(ngx_http_voice_ws_parser_t *p,
    uint8_t *msg, size_t msg_max);

/*
 * Consumes bytes from *pos up to end and stops at the first event, with
 * *pos advanced past the bytes used.  The caller loops until it gets
 * NGX_HTTP_VOICE_WS_AGAIN.  An event's data stays valid until the next
 * call.  After NGX_HTTP_VOICE_WS_ERROR the parser must not be called again.
 */
int ngx_http_voice_ws_parse(ngx_http_voice_ws_parser_t *p,
    const uint8_t **pos, const uint8_t *end, ngx_http_voice_ws_event_t *ev);

/*
 * 1 while a frame or a fragmented message is partly read: the caller
 * bounds how long that may last, so a peer cannot hold a connection open
 * by trickling a frame a byte at a time.
 */
int ngx_http_voice_ws_parser_busy(const ngx_http_voice_ws_parser_t *p);

/*
 * Writes an unmasked server frame header (FIN set) for a payload of len
 * bytes into buf, which has NGX_HTTP_VOICE_WS_OUT_HEADER bytes; returns
 * the header size (2, 4 or 10).
 */
size_t ngx_http_voice_ws_frame_header(uint8_t *buf, int opcode, size_t len);

/*
 * Writes a close frame payload: the code in network order, then the
 * reason cut to fit 125 bytes in all (never inside a UTF-8 sequence).
 * buf has NGX_HTTP_VOICE_WS_MAX_CONTROL bytes; returns the payload size.
 */
size_t ngx_http_voice_ws_close_payload(uint8_t *buf, uint16_t code,
    const char *reason);

/* 1 when the bytes are valid UTF-8 (RFC 3629: no overlongs, surrogates) */
int ngx_http_voice_ws_utf8_valid(const uint8_t *p, size_t len);


#endif /* NGX_HTTP_VOICE_WS_CODEC_H */
