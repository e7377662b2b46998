# bridged.mk: unit tests of bridged's pure parts, the files that need
# neither lws nor libuv, curl or ZeroMQ (codecs, parsers, bookkeeping).
# Included by tests/unit/Makefile, which defines TOP, O, CC, CFLAGS,
# LDFLAGS and the cmocka flags.

BD_DIR     := $(TOP)/bridged
BD_CFLAGS  := -I$(BD_DIR) -I$(TOP)/proto -I$(TOP)/common \
              $(shell pkg-config --cflags libcjson)
BD_LIBS    := $(shell pkg-config --libs libcjson)

UNIT_TESTS += test_bd_form test_bd_ring test_bd_twapi_json \
              test_bd_oai_event test_bd_conf test_bd_log \
              test_bd_session test_bd_history test_bd_retry test_bd_stats

# each test: its own .c, the bridged sources it needs, and their headers

BD_TEST_CC = $(CC) $(CFLAGS) $(CMOCKA_CFLAGS) $(BD_CFLAGS) -o $@ \
             $(filter %.c,$^) $(LDFLAGS) $(CMOCKA_LIBS) $(BD_LIBS)

$(O)/test_bd_form: $(CURDIR)/test_bd_form.c $(BD_DIR)/bd_form.c \
                   $(BD_DIR)/bd_form.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_ring: $(CURDIR)/test_bd_ring.c $(BD_DIR)/bd_ring.c \
                   $(BD_DIR)/bd_ring.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_twapi_json: $(CURDIR)/test_bd_twapi_json.c \
                         $(BD_DIR)/bd_twapi_json.c \
                         $(BD_DIR)/bd_twapi_json.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_oai_event: $(CURDIR)/test_bd_oai_event.c \
                        $(BD_DIR)/bd_oai_event.c $(TOP)/common/voice_b64.c \
                        $(BD_DIR)/bd_history.c $(BD_DIR)/bd_history.h \
                        $(TOP)/common/voice_json.c \
                        $(TOP)/common/voice_json.h \
                        $(BD_DIR)/bd_log.c $(BD_DIR)/bd_oai_event.h \
                        $(BD_DIR)/bd_stats.c $(BD_DIR)/bd_stats.h \
                        $(TOP)/common/voice_b64.h $(BD_DIR)/bd_log.h \
                        $(TOP)/proto/voice_proto.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_conf: $(CURDIR)/test_bd_conf.c $(BD_DIR)/bd_conf.c \
                   $(BD_DIR)/bd_log.c $(BD_DIR)/bd_conf.h \
                   $(BD_DIR)/bd_log.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_log: $(CURDIR)/test_bd_log.c $(BD_DIR)/bd_log.c \
                  $(BD_DIR)/bd_log.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_session: $(CURDIR)/test_bd_session.c $(BD_DIR)/bd_session.c \
                      $(BD_DIR)/bd_session.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_history: $(CURDIR)/test_bd_history.c $(BD_DIR)/bd_history.c \
                      $(BD_DIR)/bd_history.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_retry: $(CURDIR)/test_bd_retry.c $(BD_DIR)/bd_retry.c \
                    $(BD_DIR)/bd_retry.h | $(O)
	$(BD_TEST_CC)

$(O)/test_bd_stats: $(CURDIR)/test_bd_stats.c $(BD_DIR)/bd_stats.c \
                    $(BD_DIR)/bd_stats.h | $(O)
	$(BD_TEST_CC)
