# module.mk: unit tests of the nginx module's leaf codecs, the files that
# include no nginx header: the Twilio media events, the REST bodies and
# the Twilio signature (the JSON tokenizer, base64 and the WebSocket frame
# codec they build on are common/'s: common.mk).

VOICE_MOD     := $(TOP)/ngx_voice_module
VOICE_MOD_INC := -I$(VOICE_MOD) -I$(TOP)/common
CRYPTO_LIBS   := $(shell pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)

UNIT_TESTS += test_twilio test_body test_signature \
              test_seal

# each test: its own .c, the module sources it needs, and their headers

$(O)/test_twilio: $(CURDIR)/test_twilio.c \
                  $(VOICE_MOD)/ngx_http_voice_twilio.c \
                  $(TOP)/common/voice_json.c \
                  $(TOP)/common/voice_b64.c \
                  $(VOICE_MOD)/ngx_http_voice_twilio.h \
                  $(TOP)/common/voice_json.h \
                  $(TOP)/common/voice_b64.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) $(VOICE_MOD_INC) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)

$(O)/test_body: $(CURDIR)/test_body.c \
                $(VOICE_MOD)/ngx_http_voice_body.c \
                $(TOP)/common/voice_json.c \
                $(VOICE_MOD)/ngx_http_voice_body.h \
                $(TOP)/common/voice_json.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) $(VOICE_MOD_INC) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)

$(O)/test_signature: $(CURDIR)/test_signature.c \
                     $(VOICE_MOD)/ngx_http_voice_signature.c \
                     $(VOICE_MOD)/ngx_http_voice_body.c \
                     $(TOP)/common/voice_json.c \
                     $(VOICE_MOD)/ngx_http_voice_signature.h \
                     $(VOICE_MOD)/ngx_http_voice_body.h \
                     $(TOP)/common/voice_json.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) $(VOICE_MOD_INC) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS) $(CRYPTO_LIBS)

$(O)/test_seal: $(CURDIR)/test_seal.c $(VOICE_MOD)/ngx_http_voice_seal.c \
                $(VOICE_MOD)/ngx_http_voice_seal.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) $(VOICE_MOD_INC) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS) $(CRYPTO_LIBS)
