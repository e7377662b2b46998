# transcript.mk: unit tests of the transcript store's leaf formats
# (timestamps, the text rendering of a stored transcript, the walk over a
# directory's records).

UNIT_TESTS += test_transcript_fmt

$(O)/test_transcript_fmt: $(CURDIR)/test_transcript_fmt.c \
        $(TOP)/ngx_voice_module/ngx_http_voice_transcript_fmt.c \
        $(TOP)/common/voice_json.c \
        $(TOP)/ngx_voice_module/ngx_http_voice_transcript_fmt.h \
        $(TOP)/common/voice_json.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(TOP)/ngx_voice_module \
	    -I$(TOP)/common -o $@ $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)
