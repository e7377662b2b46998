# common.mk: unit tests of the leaf code in common/ that the module,
# bridged and the benchmark tools share: base64 and the JSON tokenizer and
# string writer.

VOICE_COMMON := $(TOP)/common

UNIT_TESTS += test_voice_b64 test_voice_json

$(O)/test_voice_b64: $(CURDIR)/test_voice_b64.c $(VOICE_COMMON)/voice_b64.c \
                     $(VOICE_COMMON)/voice_b64.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(VOICE_COMMON) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)

$(O)/test_voice_json: $(CURDIR)/test_voice_json.c \
                      $(VOICE_COMMON)/voice_json.c \
                      $(VOICE_COMMON)/voice_json.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(VOICE_COMMON) -o $@ \
	    $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS)
