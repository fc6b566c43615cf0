# ummap build.  `make` builds the library and CLI into build/ (or $(B)),
# `make test` runs the whole suite, `make sanitize` runs it under
# ASan+UBSan, `make tsan` runs the threaded tests under TSan.
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
B       ?= build
CC      ?= cc
SAN     ?=
OPT     ?= -O2
VERSION := 0.1.0

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS  += -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -pthread -Iinclude $(SAN)
LDLIBS  += -pthread
# Exported symbols are fixed by src/libummap.map (um_* only).
LIB_CFLAGS := -fPIC -DUM_SERVICE_PATH='"$(BINDIR)/ummap"'
# Programs run from the build tree use the service built beside them.
export UMMAP_SERVICE ?= $(abspath $(B)/ummap)

LIB_SRC := $(sort $(wildcard src/*.c))
LIB_OBJ := $(LIB_SRC:src/%.c=$(B)/obj/%.o)
TESTS   := $(sort $(wildcard tests/test_*.c))
TEST_BIN:= $(TESTS:tests/%.c=$(B)/tests/%)
TEST_LIB:= $(sort $(wildcard tests/lib/*.c))
EXAMPLES:= $(sort $(wildcard examples/*.c))
EX_BIN  := $(EXAMPLES:examples/%.c=$(B)/examples/%)
MAN3    := $(wildcard man/man3/*.3)
MAN1    := $(wildcard man/man1/*.1)

all: $(B)/libummap.so $(B)/libummap.a $(B)/ummap

$(B)/obj/%.o: src/%.c $(wildcard src/*.h) include/ummap.h | $(B)/obj
	$(CC) $(CFLAGS) $(LIB_CFLAGS) -c -o $@ $<

$(B)/libummap.so: $(LIB_OBJ) src/libummap.map
	$(CC) $(CFLAGS) -shared -Wl,-soname,libummap.so.0 \
	  -Wl,--version-script=src/libummap.map -o $@ $(LIB_OBJ) $(LDLIBS)

$(B)/libummap.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/ummap: tools/ummap.c tools/service.c tools/service.h src/proto.h $(B)/libummap.a
	$(CC) $(CFLAGS) -Isrc -o $@ tools/ummap.c tools/service.c $(B)/libummap.a $(LDLIBS)

# Made at install time, so it names the PREFIX of that install.
$(B)/ummap.pc: ummap.pc.in FORCE
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCDIR@|$(INCDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $@
FORCE:

$(B)/tests/%: tests/%.c $(TEST_LIB) $(wildcard tests/lib/*.h) src/proto.h $(B)/libummap.a | $(B)/tests
	$(CC) $(CFLAGS) -Itests/lib -Isrc -o $@ $< $(TEST_LIB) $(B)/libummap.a -lcriterion $(LDLIBS)

$(B)/examples/%: examples/%.c $(B)/libummap.a | $(B)/examples
	$(CC) $(CFLAGS) -o $@ $< $(B)/libummap.a $(LDLIBS)

$(B)/bench/%: bench/%.c $(B)/libummap.a | $(B)/bench
	$(CC) $(CFLAGS) -o $@ $< $(B)/libummap.a $(LDLIBS)

$(B)/obj $(B)/tests $(B)/examples $(B)/bench:
	mkdir -p $@

# The test command: every test program.  The fuzzer runs a fixed seed so
# that CI is reproducible; FUZZ_SEED and FUZZ_OPS choose another run.  It
# leaves out stores beyond the end of file (FUZZ_MURKY=0), where the
# kernel's own answer depends on its flusher's timing (README).
test: all $(TEST_BIN) $(EX_BIN)
	B=$(B) FUZZ_SEED=$${FUZZ_SEED:-3} FUZZ_OPS=$${FUZZ_OPS:-5000} FUZZ_MURKY=$${FUZZ_MURKY:-0} \
	  UM_TEST_SAN="$(SAN)" sh tests/run.sh $(TEST_BIN)

# ASan+UBSan build of the whole suite, in its own build directory.
sanitize:
	$(MAKE) B=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

# TSan build of the threaded tests.
tsan:
	$(MAKE) B=build-tsan OPT=-O1 SAN="-fsanitize=thread" all build-tsan/tests/test_threads
	B=build-tsan sh tests/run.sh build-tsan/tests/test_threads

# The long fuzzer runs (1,000,000 operations, default and 64 KiB budgets),
# without stores beyond the end of file (README: the kernel's answer there
# depends on its flusher), and 200,000 operations of concurrent map/read.
fuzz-long: $(B)/tests/test_fuzz
	FUZZ_SEED=$${FUZZ_SEED:-3} FUZZ_OPS=$${FUZZ_OPS:-1000000} FUZZ_MURKY=$${FUZZ_MURKY:-0} \
	  FUZZ_CONC_OPS=$${FUZZ_CONC_OPS:-200000} $(B)/tests/test_fuzz --jobs=1

# The crash loop of tests/test_crash.c, 10,000 cycles per ending.
crash-long: all $(B)/tests/test_crash
	CRASH_CYCLES=$${CRASH_CYCLES:-10000} $(B)/tests/test_crash --jobs=1 --verbose

# What paging private anonymous memory costs, next to the kernel.
bench-anon: $(B)/bench/anon_first_touch
	$(B)/bench/anon_first_touch

# Time and resident memory of a scan of a file larger than the budget.
bench-rss: $(B)/bench/rss_scan
	$(B)/bench/rss_scan

# What each way of moving bytes between a file and a memfd costs.
bench-fill: $(B)/bench/fill_paths
	$(B)/bench/fill_paths

demo: all
	$(B)/ummap demo

# Debian packages the build, the tests and the benchmarks need.
setup:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	pkgs="build-essential clang pkg-config libcriterion-dev"; \
	missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

install: all $(B)/ummap.pc
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man1
	install -m 644 $(B)/libummap.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(B)/libummap.so $(DESTDIR)$(LIBDIR)/libummap.so.$(VERSION)
	ln -sf libummap.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libummap.so.0
	ln -sf libummap.so.0 $(DESTDIR)$(LIBDIR)/libummap.so
	install -m 644 include/ummap.h $(DESTDIR)$(INCDIR)/
	install -m 644 $(B)/ummap.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 755 $(B)/ummap $(DESTDIR)$(BINDIR)/
	for m in $(MAN3); do cp -P $$m $(DESTDIR)$(MANDIR)/man3/; done
	for m in $(MAN1); do cp -P $$m $(DESTDIR)$(MANDIR)/man1/; done

clean:
	rm -rf build build-asan build-tsan

.PHONY: all test sanitize tsan fuzz-long crash-long bench-anon bench-rss bench-fill demo setup install clean FORCE
.SECONDARY:
