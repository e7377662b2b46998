# common.mk: unit tests of the leaf code in common/ that the module,
# bridged and the benchmark tools share: base64, the JSON tokenizer and
# string writer, and the WebSocket frame codec.

VOICE_COMMON := $(TOP)/common

UNIT_TESTS += test_voice_b64 test_voice_json test_voice_ws

$(O)/test_voice_b64: $(CURDIR)/test_voice_b64.c $(VOICE_COMMON)/voice_b64.c \
                     $(VOICE_COMMON)/voice_b64.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(VOICE_COMMON) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)

$(O)/test_voice_json: $(CURDIR)/test_voice_json.c \
                      $(VOICE_COMMON)/voice_json.c \
                      $(VOICE_COMMON)/voice_json.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(VOICE_COMMON) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)

$(O)/test_voice_ws: $(CURDIR)/test_voice_ws.c $(VOICE_COMMON)/voice_ws.c \
                    $(VOICE_COMMON)/voice_ws.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(VOICE_COMMON) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)
