# moonwait: build, test, bench. Plain make; pkg-config for flags.
#
#   make                 build/moonwait (runs scripts/setup first)
#   make test            C unit tests + busted specs; ends "N passed, N failed"
#   make check-asan      the same suite on an ASan+UBSan build (build-asan/)
#   make valgrind        the functional specs with every moonwait under valgrind
#   make bench           benchmarks (prints figures, asserts nothing)
#   make mutants         mutation harness (scripts/mutants.list; MUTANTS=id,id for a subset)
#   make fuzz            libFuzzer targets (spec/fuzz/), FUZZ_SECONDS (60) each, in build-fuzz/
#   make quickstart      run examples/quickstart
#   make example-http    run examples/http-enrich (starts its own nginx)
#   make example-redis   run examples/redis-lookup (starts its own redis-server)
#   make example-streams run examples/streams: 3 consumers in a Redis consumer group, exactly once
#   make example-batch   run examples/batch-quota: MGET batches under a 200 calls/s quota, keyed by user
#                        (starts its own redis-server and nginx)
#   make install PREFIX=/usr/local

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BUILD     ?= build
CC        ?= cc
OPT       ?= -O2 -g
SANITIZER ?=
PKGS      := luajit libuv openssl
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

# Runs before anything reads pkg-config: a fresh machine gets its packages.
SETUP := $(shell scripts/setup >&2 || echo failed)
ifeq ($(SETUP),failed)
$(error scripts/setup could not install the packages moonwait needs)
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

ifeq ($(SANITIZER),address)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

CFLAGS  ?=
CFLAGS  += -std=c11 $(OPT) -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -MMD -MP \
           $(PKG_CFLAGS) -I$(LLHTTP_INC) $(SANFLAGS) -DMW_VERSION='"$(VERSION)"' \
           -DMW_LUA_DIR='"$(PREFIX)/share/moonwait/lua"'
LDFLAGS ?=
LDFLAGS += $(SANFLAGS) -rdynamic
LDLIBS  := $(PKG_LIBS) -lm

# Every .c under src/<layer>/ is part of the binary (a new file needs no
# edit here).
SRCS := $(sort $(foreach d,op store util json io net lua app,$(wildcard src/$(d)/*.c)))
OBJS := $(SRCS:%.c=$(BUILD)/%.o)
# llhttp: compiled from the C sources Debian's node-llhttp installs (never
# copied into this repository). Its generated code is not ours to fix, so
# it is built with the sanitizers but without -Werror.
LLHTTP_OBJS := $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
CORE_OBJS := $(BUILD)/src/op/op.o $(BUILD)/src/op/keymap.o $(BUILD)/src/op/wmgen.o $(BUILD)/src/op/retry.o $(BUILD)/src/util/str.o \
             $(BUILD)/src/util/retry_policy.o $(BUILD)/src/util/siphash.o

JSON_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/json/*.c))
# The record codec (src/lua/codec.h), without the rest of the Lua adapter.
CODEC_SRCS := src/lua/codec.c src/lua/decode.c src/lua/encode.c src/lua/encode_doc.c

# The HTTP client's protocol, the receive patterns and the errors' where (src/net), no Lua.
NET_HTTP_OBJS := $(BUILD)/src/net/http.o $(BUILD)/src/net/http_resp.o $(BUILD)/src/net/recv.o \
                 $(BUILD)/src/net/dial.o $(BUILD)/src/net/conn.o $(BUILD)/src/net/dns.o \
                 $(BUILD)/src/net/pool.o $(BUILD)/src/net/tls.o $(BUILD)/src/net/where.o

CTESTS := $(BUILD)/test_op $(BUILD)/test_ckpt $(BUILD)/test_json $(BUILD)/test_runtime $(BUILD)/test_config \
          $(BUILD)/test_http $(BUILD)/test_codec $(BUILD)/test_lines $(BUILD)/test_snapshot \
          $(BUILD)/test_resp $(BUILD)/test_redis_url $(BUILD)/test_lru \
          $(BUILD)/test_adapt $(BUILD)/test_tbucket $(BUILD)/test_metrics
HELPERS := $(BUILD)/faultpeer

.PHONY: mutants all test check-asan valgrind bench install clean quickstart example-http example-redis example-streams example-cache example-batch fuzz fuzz-build
all: $(BUILD)/moonwait $(CTESTS) $(HELPERS)

$(BUILD)/moonwait: $(OBJS) $(LLHTTP_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 $(OPT) -w -I$(LLHTTP_INC) $(SANFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/test_op: $(BUILD)/spec/c/test_op.o $(CORE_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ -lm

$(BUILD)/test_ckpt: $(BUILD)/spec/c/test_ckpt.o $(BUILD)/src/store/ckpt.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/test_json: $(BUILD)/spec/c/test_json.o $(JSON_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ -lm

# The run settings: the option table, the pipeline file (a throwaway Lua VM
# and the retry table reader) and the command line.
CONFIG_OBJS := $(BUILD)/src/app/config.o $(BUILD)/src/app/options.o $(BUILD)/src/app/pipefile.o \
               $(BUILD)/src/lua/retry_table.o $(BUILD)/src/op/retry.o $(BUILD)/src/util/str.o \
               $(BUILD)/src/util/retry_policy.o $(BUILD)/src/io/redis_url.o $(BUILD)/src/lua/batch_opts.o

$(BUILD)/test_config: $(BUILD)/spec/c/test_config.o $(CONFIG_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BUILD)/test_runtime: $(BUILD)/spec/c/test_runtime.o $(BUILD)/src/lua/runtime.o $(BUILD)/src/lua/guard.o \
		$(BUILD)/src/lua/family.o $(BUILD)/src/lua/mod_log.o $(BUILD)/src/lua/mod_thread.o
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/test_http: $(BUILD)/spec/c/test_http.o $(NET_HTTP_OBJS) $(LLHTTP_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/test_codec: $(BUILD)/spec/c/test_codec.o $(CODEC_SRCS:%.c=$(BUILD)/%.o) $(JSON_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BUILD)/test_resp: $(BUILD)/spec/c/test_resp.o $(BUILD)/src/net/resp.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/test_redis_url: $(BUILD)/spec/c/test_redis_url.o $(BUILD)/src/io/redis_url.o $(BUILD)/src/net/redis_cluster.o \
		$(BUILD)/src/net/resp.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/test_lru: $(BUILD)/spec/c/test_lru.o $(BUILD)/src/util/lru.o $(BUILD)/src/util/siphash.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/test_adapt: $(BUILD)/spec/c/test_adapt.o $(BUILD)/src/op/adapt.o
$(BUILD)/test_tbucket: $(BUILD)/spec/c/test_tbucket.o $(BUILD)/src/util/tbucket.o
	$(CC) $(LDFLAGS) -o $@ $^ -lm

$(BUILD)/test_metrics: $(BUILD)/spec/c/test_metrics.o $(BUILD)/src/util/metrics.o
	$(CC) $(LDFLAGS) -o $@ $^ -lm

$(BUILD)/test_lines: $(BUILD)/spec/c/test_lines.o $(BUILD)/src/io/lines.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/test_snapshot: $(BUILD)/spec/c/test_snapshot.o $(BUILD)/src/app/snapshot.o $(CORE_OBJS) $(BUILD)/src/store/ckpt.o
	$(CC) $(LDFLAGS) -o $@ $^ -lm

$(BUILD)/faultpeer: $(BUILD)/spec/c/faultpeer.o
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

test: all fuzz-build
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) CTEST_DIR=$(abspath $(BUILD)) \
	FUZZ_DIR=$(abspath $(FUZZ_BUILD)) scripts/run-tests

# Slow, not part of `make test`: each mutant is built in a scratch copy of the tree.
mutants:
	scripts/mutants

check-asan:
	$(MAKE) BUILD=build-asan SANITIZER=address OPT="-O1 -g" test

valgrind: all
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) CTEST_DIR=$(abspath $(BUILD)) \
	MOONWAIT_WRAPPER="valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99" \
	scripts/run-tests

quickstart: $(BUILD)/moonwait
	$(BUILD)/moonwait run examples/quickstart/pipeline.lua

example-http: $(BUILD)/moonwait
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) examples/http-enrich/run

example-redis: $(BUILD)/moonwait
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) examples/redis-lookup/run

example-cache: $(BUILD)/moonwait
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) examples/cache-and-fanout/run

example-streams: $(BUILD)/moonwait
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) examples/streams/run

example-batch: $(BUILD)/moonwait
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) examples/batch-quota/run

bench: all
	MOONWAIT_BIN=$(abspath $(BUILD)/moonwait) scripts/bench

install: $(BUILD)/moonwait
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/moonwait/lua/moonwait
	install -m 755 $(BUILD)/moonwait $(DESTDIR)$(PREFIX)/bin/moonwait
	install -m 644 lua/moonwait/*.lua $(DESTDIR)$(PREFIX)/share/moonwait/lua/moonwait/

clean:
	rm -rf build build-asan

# ---- fuzzing: clang's libFuzzer with ASan+UBSan (LSan on), always in build-fuzz/ --
# `make fuzz` runs each target FUZZ_SECONDS on build-fuzz/corpus/<target>
# (seeded from spec/fuzz/seeds/<target>); a crash fails it and leaves
# build-fuzz/crashes/<target>/crash-<sha1>; rerun one with
#   build-fuzz/<target> build-fuzz/crashes/<target>/crash-<sha1>
# `make test` runs each for FUZZ_SLICE_SECONDS (env, default 5) via build-fuzz/test_<target>.
FUZZ_BUILD   := build-fuzz
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_json fuzz_codec fuzz_http fuzz_resp fuzz_ckpt fuzz_redis
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=c11 -g -O1 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -MMD -MP \
                $(shell pkg-config --cflags luajit) -I$(LLHTTP_INC) $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_JSON_OBJS := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(wildcard src/json/*.c))
# llhttp's generated C, instrumented for coverage and the sanitizers, without -Werror.
FUZZ_LLHTTP_OBJS := $(FUZZ_BUILD)/llhttp/api.o $(FUZZ_BUILD)/llhttp/http.o $(FUZZ_BUILD)/llhttp/llhttp.o

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%) $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/test_%)

fuzz: fuzz-build
	FUZZ_DIR=$(abspath $(FUZZ_BUILD)) FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/run-fuzz $(FUZZ_TARGETS)

$(FUZZ_BUILD)/fuzz_json: $(FUZZ_BUILD)/spec/fuzz/fuzz_json.o $(FUZZ_JSON_OBJS)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ -lm

$(FUZZ_BUILD)/fuzz_codec: $(FUZZ_BUILD)/spec/fuzz/fuzz_codec.o $(CODEC_SRCS:%.c=$(FUZZ_BUILD)/%.o) $(FUZZ_JSON_OBJS)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(shell pkg-config --libs luajit) -lm

$(FUZZ_BUILD)/fuzz_http: $(FUZZ_BUILD)/spec/fuzz/fuzz_http.o $(FUZZ_BUILD)/src/net/http_resp.o $(FUZZ_LLHTTP_OBJS)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^

$(FUZZ_BUILD)/fuzz_resp: $(FUZZ_BUILD)/spec/fuzz/fuzz_resp.o
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(shell pkg-config --libs luajit) -lm

$(FUZZ_BUILD)/spec/fuzz/fuzz_resp.o: FUZZ_CFLAGS += -DFUZZ_LUA_DIR='"$(abspath lua)"'

$(FUZZ_BUILD)/fuzz_ckpt: $(FUZZ_BUILD)/spec/fuzz/fuzz_ckpt.o $(FUZZ_BUILD)/src/store/ckpt.o
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^

# The host's Redis pieces in plain C: the RESP reader, the cluster helpers, the URLs.
$(FUZZ_BUILD)/fuzz_redis: $(FUZZ_BUILD)/spec/fuzz/fuzz_redis.o $(FUZZ_BUILD)/src/net/resp.o \
		$(FUZZ_BUILD)/src/net/redis_cluster.o $(FUZZ_BUILD)/src/io/redis_url.o
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^

$(FUZZ_BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c99 -g -O1 -w -I$(LLHTTP_INC) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<

# The slice `make test` runs (scripts/run-tests runs $(FUZZ_DIR)/test_*).
$(FUZZ_BUILD)/test_%: $(FUZZ_BUILD)/% scripts/run-fuzz
	printf '#!/bin/sh\nFUZZ_DIR=%s exec %s --slice %s\n' $(abspath $(FUZZ_BUILD)) $(abspath scripts/run-fuzz) $* >$@
	chmod +x $@

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@[ -f $(FUZZ_BUILD)/.gitignore ] || echo '*' >$(FUZZ_BUILD)/.gitignore
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

-include $(wildcard $(FUZZ_BUILD)/src/*/*.d $(FUZZ_BUILD)/spec/fuzz/*.d)

-include $(OBJS:.o=.d) $(CTESTS:$(BUILD)/%=$(BUILD)/spec/c/%.d) $(BUILD)/spec/c/faultpeer.d
