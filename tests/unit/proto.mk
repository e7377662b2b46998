# proto.mk: unit tests of the nginx <-> bridged message codec.

UNIT_TESTS += test_proto

$(O)/test_proto: $(CURDIR)/test_proto.c $(TOP)/proto/voice_proto.c \
                 $(TOP)/proto/voice_proto.h | $(O)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -I$(TOP)/proto -o $@ \
	    $(CURDIR)/test_proto.c $(TOP)/proto/voice_proto.c \
	    $(LDFLAGS) $(CMOCKA_LIBS)
