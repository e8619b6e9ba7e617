# make bench: clamfuse against the native directory, ClamFS and bare clamd
# (issue #3). Included from the top-level Makefile
#
#	include test/cmd/bench/bench.mk
#
# and usable alone from the repository root:
#
#	make -f test/cmd/bench/bench.mk bench [QUICK=1] [BENCH_FLAGS='-runs 7']
#
# Needs root (it drops the page cache and mounts FUSE), /dev/fuse, fuse3,
# clamav-daemon, clamav, clamav-testfiles, clamfs and gcc (for the FUSE
# floor, test/cmd/bench/floor). Writes bench/RESULTS.md.
# The data set (about 1.3 GiB, or 0.2 GiB with QUICK=1) is kept in
# BENCH_DIR for later runs; delete it by hand.

GO ?= go
BENCH_DIR ?= /var/tmp/clamfuse-bench
BENCH_FLAGS ?=

.PHONY: bench
bench:
	@echo "bench: building bin/clamfuse, starting a private clamd, data in $(BENCH_DIR)$(if $(filter 1,$(QUICK)), (QUICK: small sizes, 3 runs),)"
	$(GO) run ./test/cmd/bench -dir $(BENCH_DIR) $(if $(filter 1,$(QUICK)),-quick,) $(BENCH_FLAGS)
