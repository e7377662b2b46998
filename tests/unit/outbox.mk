# outbox.mk: unit tests of the post-call webhook's outbox entries (names,
# contents) and its backoff.

UNIT_TESTS += test_outbox_fmt

$(O)/test_outbox_fmt: $(CURDIR)/test_outbox_fmt.c \
        $(TOP)/ngx_voice_module/ngx_http_voice_outbox_fmt.c \
        $(TOP)/ngx_voice_module/ngx_http_voice_outbox_fmt.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(TOP)/ngx_voice_module -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)
