# ngx_http_presence_module
#
#   make            build build/ngx_http_presence_module.so against the
#                   installed nginx (Debian's nginx-dev)
#   make test       install what is missing, build, run the whole suite
#   make deps       install the Debian packages everything here needs
#   make deb        build/deb/libnginx-mod-http-presence_<version>_<arch>.deb
#                   with Debian's tooling (debhelper, dh_nginx), and lintian
#   make clean      remove build/
#
#   NGINX_SRC=DIR make ...   build against an upstream nginx source tree
#                            (and test with the nginx binary built from it)
#   make test T=t/001-zone.t run one test file

SHELL := /bin/bash
.DEFAULT_GOAL := all

MODULE  := ngx_http_presence_module
BUILD   := $(CURDIR)/build
SOURCES := $(wildcard $(MODULE)/*.c $(MODULE)/*.h)
DEB_SRC := /usr/share/nginx/src

ifeq ($(NGINX_SRC),)
NGX_TREE   := $(BUILD)/nginx-src
NGX_TARGET := modules
SO         := $(BUILD)/$(MODULE).so
NGINX_BIN  ?= /usr/sbin/nginx
else
NGX_TREE   := $(BUILD)/nginx-upstream
NGX_TARGET := build
SO         := $(BUILD)/upstream/$(MODULE).so
NGINX_BIN  ?= $(NGX_TREE)/objs/nginx
endif

# flags for an upstream tree: what the module and the suite need
UPSTREAM_FLAGS := --with-compat --with-debug --with-threads \
                  --with-http_ssl_module --with-http_realip_module \
                  --with-http_stub_status_module --with-http_v2_module

# what "make deb" needs besides the build dependencies below
DEB_BUILD_PKGS := debhelper dpkg-dev fakeroot lintian

DEB_PKGS := make gcc nginx nginx-dev libpq-dev libjansson-dev libssl-dev \
            postgresql postgresql-contrib openssl curl \
            perl libtest-base-perl wrk gdb prometheus faketime \
            chromium chromium-driver python3-selenium \
            $(DEB_BUILD_PKGS)

T ?= t/

.PHONY: all deps test clean run stop token deb

all: $(SO)

deps:
	@t/bin/install-deps $(DEB_PKGS)

$(NGX_TREE)/objs/Makefile: config VERSION
	rm -rf $(NGX_TREE)
	mkdir -p $(BUILD)
ifeq ($(NGINX_SRC),)
	cp -a $(DEB_SRC) $(NGX_TREE)
	cd $(NGX_TREE) && . ./conf_flags \
	    && ./configure "$${NGX_CONF_FLAGS[@]}" \
	                   --add-dynamic-module=$(CURDIR) > configure.log \
	    || { cat configure.log; exit 1; }
else
	mkdir -p $(NGX_TREE)
	cp -a $(NGINX_SRC)/. $(NGX_TREE)
	cd $(NGX_TREE) && ./configure $(UPSTREAM_FLAGS) \
	                   --add-dynamic-module=$(CURDIR) > configure.log \
	    || { cat configure.log; exit 1; }
endif

$(SO): $(NGX_TREE)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(NGX_TREE) -f objs/Makefile $(NGX_TARGET)
	install -D -m 644 $(NGX_TREE)/objs/$(MODULE).so $@

test: deps
	$(MAKE) all
	NGINX_BIN=$(NGINX_BIN) SO=$(SO) t/bin/run-suite $(T)

# the whole suite under AddressSanitizer and UBSan: nginx itself built
# from the upstream tree with the same flags and NGX_DEBUG_PALLOC (every
# pool allocation a real malloc), so ASan sees what the module does with
# nginx's memory; any report fails the run

ASAN_TREE := $(BUILD)/asan
ASAN_CC   := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
             -DNGX_DEBUG_PALLOC=1
ASAN_LOGS := $(ASAN_TREE)/reports

.PHONY: test-asan asan

$(ASAN_TREE)/objs/nginx: config VERSION Makefile $(SOURCES)
	@t/bin/install-deps $(DEB_PKGS)
	@if [ ! -f $(ASAN_TREE)/objs/Makefile ] || [ config -nt $(ASAN_TREE)/objs/Makefile ] \
	     || [ VERSION -nt $(ASAN_TREE)/objs/Makefile ] \
	     || [ Makefile -nt $(ASAN_TREE)/objs/Makefile ]; then \
	    src=$$(t/bin/nginx-source) && rm -rf $(ASAN_TREE) && mkdir -p $(BUILD) \
	    && cp -a $$src $(ASAN_TREE) && cd $(ASAN_TREE) \
	    && ./configure $(UPSTREAM_FLAGS) --with-cc-opt='$(ASAN_CC)' \
	         --with-ld-opt='-fsanitize=address,undefined' \
	         --add-dynamic-module=$(CURDIR) > configure.log \
	    || { cat configure.log; exit 1; }; \
	fi
	$(MAKE) -C $(ASAN_TREE) -f objs/Makefile build
	touch $@

asan: $(ASAN_TREE)/objs/nginx

test-asan: asan
	rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0:log_path=$(ASAN_LOGS)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:log_path=$(ASAN_LOGS)/ubsan:suppressions=$(CURDIR)/t/ubsan.supp \
	NGINX_BIN=$(ASAN_TREE)/objs/nginx \
	SO=$(ASAN_TREE)/objs/$(MODULE).so t/bin/run-suite $(T)
	@if ls $(ASAN_LOGS)/* >/dev/null 2>&1; then \
	    echo "sanitizer reports:"; cat $(ASAN_LOGS)/*; exit 1; \
	fi
	@echo "test-asan: no sanitizer reports"

# the module's tests under valgrind (one worker each, as the harness runs
# nginx): no invalid read or write, no definite leak in the module's code

VG_TESTS ?= t/010-jwt-hs.t t/011-jwt-keys.t t/020-track.t t/030-api.t \
            t/080-hostile.t

.PHONY: test-valgrind

test-valgrind: deps
	$(MAKE) all
	@t/bin/install-deps valgrind
	rm -rf $(BUILD)/valgrind
	TEST_NGINX_TIMEOUT=20 NGINX_REAL_BIN=$(NGINX_BIN) \
	NGINX_BIN=$(CURDIR)/t/bin/valgrind-nginx SO=$(SO) \
	    t/bin/run-suite $(VG_TESTS)
	@if grep -l "ngx_http_presence\|Invalid \(read\|write\)" \
	        $(BUILD)/valgrind/vg.* 2>/dev/null; then \
	    echo "valgrind reports:"; cat $(BUILD)/valgrind/vg.*; exit 1; \
	fi
	@echo "test-valgrind: $$(ls $(BUILD)/valgrind | wc -l) processes," \
	      "no invalid access, no definite leak in the module"

# the demo: PostgreSQL, nginx on 127.0.0.1:8080, a token and curl lines
run: deps
	$(MAKE) all
	NGINX_BIN=$(NGINX_BIN) SO=$(SO) t/bin/demo run

stop:
	@t/bin/demo stop

# make token USER=42 [EXP=3600] [ROLE=admin]
token:
	@t/bin/demo token "$(USER)" "$(EXP)" "$(ROLE)"

# the Debian package, built as Debian builds its nginx module packages
# (dh with the nginx sequence and build system from nginx-dev) from a copy
# of the tree in build/deb/, so nothing is written beside the repository;
# lintian must report no error
deb:
	@t/bin/install-deps $(DEB_PKGS)
	t/bin/deb

clean:
	-@t/bin/demo stop >/dev/null 2>&1
	-@t/bin/pg stop test >/dev/null 2>&1
	rm -rf $(BUILD) t/servroot*

# libFuzzer on the JWT verifier (and key loading) and on the API's
# query-string parsers; FUZZ_TIME in seconds for each.  New inputs go to
# build/fuzz/, the seeds stay in t/fuzz/corpus/.

FUZZ_TIME  ?= 60
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=undefined -I $(MODULE)

.PHONY: fuzz fuzz-jwt fuzz-args

$(BUILD)/fuzz/jwt_fuzz: t/fuzz/jwt_fuzz.c $(MODULE)/ngx_http_presence_jwt.c \
                        $(MODULE)/ngx_http_presence_jwt.h
	@t/bin/install-deps clang libclang-rt-14-dev libssl-dev libjansson-dev
	mkdir -p $(BUILD)/fuzz/jwt
	clang $(FUZZ_FLAGS) t/fuzz/jwt_fuzz.c $(MODULE)/ngx_http_presence_jwt.c \
	    -lcrypto -ljansson -lm -o $@

$(BUILD)/fuzz/args_fuzz: t/fuzz/args_fuzz.c $(MODULE)/ngx_http_presence_args.c \
                         $(MODULE)/ngx_http_presence_args.h
	@t/bin/install-deps clang libclang-rt-14-dev
	mkdir -p $(BUILD)/fuzz/args
	clang $(FUZZ_FLAGS) t/fuzz/args_fuzz.c \
	    $(MODULE)/ngx_http_presence_args.c -o $@

fuzz-jwt: $(BUILD)/fuzz/jwt_fuzz
	$< -max_total_time=$(FUZZ_TIME) -max_len=8192 -timeout=10 \
	    -print_final_stats=1 $(BUILD)/fuzz/jwt t/fuzz/corpus/jwt

fuzz-args: $(BUILD)/fuzz/args_fuzz
	$< -max_total_time=$(FUZZ_TIME) -max_len=4096 -timeout=10 \
	    -print_final_stats=1 $(BUILD)/fuzz/args t/fuzz/corpus/args

fuzz: fuzz-jwt fuzz-args

.PHONY: bench bench-jwt chaos

# faults under load (PostgreSQL stopped, reloads, SIGKILLs, a full zone, a
# terminated backend), then PostgreSQL compared with the zone
chaos: deps
	$(MAKE) all
	NGINX_BIN=$(NGINX_BIN) SO=$(SO) t/bin/chaos

# the performance bar (SPEC section 7): build/bench/results.md and .csv
bench: deps
	$(MAKE) all
	NGINX_BIN=$(NGINX_BIN) SO=$(SO) t/bin/bench

bench-jwt: deps all
	NGINX_BIN=$(NGINX_BIN) SO=$(SO) t/bench/jwt.sh
