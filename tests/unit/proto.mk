# proto.mk: unit tests of the leaf code both sides share: the nginx <->
# bridged message codec and the CURVE key files.

UNIT_TESTS += test_proto

$(O)/test_proto: $(CURDIR)/test_proto.c $(TOP)/proto/voice_proto.c \
                 $(TOP)/proto/voice_proto.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(TOP)/proto -o $@ \
	    $(CURDIR)/test_proto.c $(TOP)/proto/voice_proto.c \
	    $(LDFLAGS) $(CMOCKA_LIBS)

# the CURVE key files (proto/voice_curve.c), read by both sides

UNIT_TESTS += test_curve

$(O)/test_curve: $(CURDIR)/test_curve.c $(TOP)/proto/voice_curve.c \
                 $(TOP)/proto/voice_curve.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(TOP)/proto -o $@ \
	    $(CURDIR)/test_curve.c $(TOP)/proto/voice_curve.c \
	    $(LDFLAGS) $(CMOCKA_LIBS)
