# Makefile: builds the voice bridge into O (build/ by default; build.sh
# passes VOICE_BUILD_DIR).  Nothing is installed here: ./build.sh installs
# the Debian packages this needs, then runs make, which decides what is
# stale.
#
#     make O=/abs/dir            all of the below
#     make O=/abs/dir module     nginx/ngx_http_voice_module.so, built
#                                against Debian's nginx sources
#     make O=/abs/dir bridged    bridged/bridged (bridged/Makefile)
#     make O=/abs/dir fixtures   fixtures/{caller,reply}.{ulaw,txt}: speech
#                                for the tests and the simulation
#     make O=/abs/dir certs      certs/: a test CA, a certificate for
#                                localhost, and one of another CA
#
# The module is configured once (nginx's ./configure, its Makefile in
# O/nginx), and again only when its build file (ngx_voice_module/config),
# Debian's configure flags or VOICE_CC_OPT / VOICE_LD_OPT change; nginx's
# Makefile then rebuilds what is stale, with the headers each object
# really includes (gcc -MMD: the .d files beside the objects).

TOP     := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
O       ?= $(TOP)/build
override O := $(abspath $(O))
NGX_SRC ?= /usr/share/nginx/src
NGX_OUT := $(O)/nginx
MODULE  := $(NGX_OUT)/ngx_http_voice_module.so
CERTS   := $(O)/certs
FIX     := $(O)/fixtures

# the speech fixtures, made here and never committed: the caller's
# sentence and the assistant's answer
SPEECH_caller := Hello, I would like to book a table for two at seven pm.
SPEECH_reply  := Sure, for what time would you like the table?

SHELL   := /bin/bash
.DELETE_ON_ERROR:
.PHONY: all module bridged fixtures certs sse FORCE

all: module bridged fixtures certs

module: $(MODULE)
fixtures: $(foreach f,caller reply,$(FIX)/$(f).ulaw $(FIX)/$(f).txt)
certs: $(CERTS)/server.pem
sse: $(O)/sse/node_modules/.package-lock.json

# $(call update,PRINTF ARGUMENTS): the target's content becomes what
# printf prints, written only when it differs, so that what depends on it
# is remade only then.  Its own temporary file (the shell's pid): builds
# of the same tree at once (./build.sh run in parallel tests) are safe
define update
@mkdir -p $(@D) && printf $(1) > $@.$$$$ && \
  if cmp -s $@.$$$$ $@; then rm $@.$$$$; else mv $@.$$$$ $@; fi
endef


# --- the nginx module -------------------------------------------------------

# the options configure is given (from the environment, as build.sh had)
$(NGX_OUT)/configure.opts: FORCE
	$(call update,'%s\n' "$${VOICE_CC_OPT:-}" "$${VOICE_LD_OPT:-}")

$(NGX_OUT)/Makefile: $(TOP)/ngx_voice_module/config $(NGX_SRC)/conf_flags \
                     $(NGX_OUT)/configure.opts
	@echo "make: configuring the module against $(NGX_SRC)" >&2
	@cd $(NGX_SRC) && . ./conf_flags && \
	  ./configure --with-cc-opt="-g -O2 -fPIC -MMD -MP $${VOICE_CC_OPT:-}" \
	      --with-ld-opt="-fPIC $${VOICE_LD_OPT:-}" \
	      "$${NGX_CONF_FLAGS[@]}" \
	      --add-dynamic-module=$(TOP)/ngx_voice_module \
	      --builddir=$(NGX_OUT) > $(NGX_OUT)/configure.log 2>&1 \
	  || { tail -n 30 $(NGX_OUT)/configure.log; rm -f $@; exit 1; }

# read with nginx's Makefile: the headers each of the module's objects
# includes (-MP: a header gone is no error)
$(NGX_OUT)/deps.mk:
	@mkdir -p $(@D)
	@echo '-include $$(wildcard $(NGX_OUT)/addon/*/*.d)' > $@

# nginx's own Makefile knows the objects: it runs every time and does
# nothing when nothing changed
$(MODULE): $(NGX_OUT)/Makefile $(NGX_OUT)/deps.mk FORCE
	@$(MAKE) -s --no-print-directory -C $(NGX_SRC) \
	    -f $(NGX_OUT)/Makefile -f $(NGX_OUT)/deps.mk \
	    modules > $(NGX_OUT)/make.log 2>&1 \
	  || { cat $(NGX_OUT)/make.log; exit 1; }


# --- bridged ----------------------------------------------------------------

bridged:
	@$(MAKE) -s --no-print-directory -C $(TOP)/bridged O=$(O)/bridged


# --- speech fixtures --------------------------------------------------------

$(FIX)/%.txt: FORCE
	$(call update,'%s' "$(SPEECH_$*)")

# raw mu-law 8 kHz like Twilio's payloads, padded with silence to whole
# 20 ms frames; no dither (sox -D): the same text gives the same bytes.
# 185 words a minute, a brisk caller: each call of the tests is that much
# shorter (the caller's sentence 3.4 s, the answer 2.6 s; at espeak's 150
# they were 4.3 s and 3.2 s, and the suite ran 11 % longer)
$(FIX)/%.ulaw: $(FIX)/%.txt
	@espeak-ng -v en-us -s 185 -w $(FIX)/$*.wav "$$(cat $<)"
	@sox -D $(FIX)/$*.wav -r 8000 -c 1 -e mu-law -b 8 -t raw $@.tmp
	@size=$$(stat -c %s $@.tmp); \
	  head -c $$(( (160 - size % 160) % 160 )) /dev/zero | tr '\0' '\377' \
	    >> $@.tmp
	@mv $@.tmp $@


# --- the tests' Server-Sent Events client ----------------------------------

# npm's eventsource at the version tests/sse/package-lock.json pins, put by
# npm ci into $(O)/sse/node_modules (the tests give node that as
# NODE_PATH); only the tests need it, so it is not part of all
$(O)/sse/node_modules/.package-lock.json: $(TOP)/tests/sse/package.json \
		$(TOP)/tests/sse/package-lock.json
	@mkdir -p $(O)/sse
	@cp $^ $(O)/sse/
	@echo "build.sh: installing the tests' SSE client (npm ci in $(O)/sse)"
	@cd $(O)/sse && npm ci --no-audit --no-fund > npm.log 2>&1 \
	  || { cat npm.log; exit 1; }
	@touch $@


# --- certificates -----------------------------------------------------------

# made in a directory of their own, moved in whole
$(CERTS)/server.pem:
	@rm -rf $(CERTS).tmp && mkdir -p $(CERTS).tmp
	@cd $(CERTS).tmp && { \
	  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key \
	      -out ca.pem -days 3650 -subj "/CN=voice bridge test CA" && \
	  openssl req -newkey rsa:2048 -nodes -keyout server.key \
	      -out server.csr -subj "/CN=localhost" && \
	  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	      "basicConstraints=CA:FALSE" \
	      "keyUsage=digitalSignature,keyEncipherment" \
	      "extendedKeyUsage=serverAuth" > san.ext && \
	  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key \
	      -CAcreateserial -out server.pem -days 3650 -extfile san.ext && \
	  : a second CA, whose certificate bridged must refuse && \
	  openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key \
	      -out other-ca.pem -days 3650 -subj "/CN=some other CA" && \
	  openssl req -newkey rsa:2048 -nodes -keyout other.key \
	      -out other.csr -subj "/CN=localhost" && \
	  openssl x509 -req -in other.csr -CA other-ca.pem \
	      -CAkey other-ca.key -CAcreateserial -out other.pem -days 3650 \
	      -extfile san.ext; \
	  } 2> openssl.log \
	  || { cat $(CERTS).tmp/openssl.log; exit 1; }
	@rm -rf $(CERTS) && mv $(CERTS).tmp $(CERTS)
