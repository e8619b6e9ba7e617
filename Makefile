# clamfuse: build, test and demo targets. Each target says what it does.
#
#   make build   bin/clamfuse, version from git describe
#   make test    vet, gofmt check, the race-enabled test suite (summarised by
#                test/cmd/testreport: every skip listed with its reason), a
#                short fuzz pass; as root (FUSE mounts), with the Debian
#                packages of the README installed; under 10 minutes
#   make fuzz    each fuzz target for FUZZTIME (default 30s)
#   make check   gofmt, go vet and the layout greps (no root, no clamd)
#   make demo    a private clamd and a live mount under demo/ (test/demo.sh)
#   make clean   remove bin/ and demo/

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Go from PATH, else the usual tarball location; the tests run `go build`
# themselves, so its directory goes on PATH too.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(patsubst %/,%,$(dir $(GO))):$(PATH)

MODULE   := github.com/clamfuse/clamfuse
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -X main.version=$(VERSION)
FUZZTIME ?= 30s

# The packages that may import bazil.org/fuse or its in-tree copy
# fs/internal/fuse (fs/internal/fuse, its fuseutil, and fs/internal/fusefs
# are part of bazil.org/fuse itself); everything else is
# FUSE-free policy (clamav/, cache/, config/).
FUSE_OK := $(MODULE)/fs $(MODULE)/fs/internal/fuse $(MODULE)/fs/internal/fuse/fuseutil $(MODULE)/fs/internal/fusefs $(MODULE)/cmd/% $(MODULE)/test $(MODULE)/test/%
FUSE_RE := ^(bazil[.]org/fuse|$(subst .,[.],$(MODULE))/fs/internal/fuse)(/|$$)
empty :=
space := $(empty) $(empty)
FUSE_OK_RE := $(subst %,.+,$(subst $(space),|,$(FUSE_OK)))

# A distinctive piece of the EICAR test string, written so that this file
# does not contain it: no file in the repository may.
EICAR_RE := EICAR-STANDARD[-]ANTIVIRUS

# The commented example config: every key at its default.
EXAMPLE := packaging/examples/clamfuse.toml.example

.PHONY: build test fuzz soak check demo clean require-root

build:
	@echo "==> go build -o bin/clamfuse ./cmd/clamfuse (version $(VERSION), pure Go as packaged)"
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/clamfuse ./cmd/clamfuse

require-root:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make test must run as root: the mounted tests mount FUSE filesystems and start clamd." >&2; \
		echo "Run it as root (e.g. sudo make test), after installing the packages in README.md." >&2; \
		exit 1; \
	fi

test: require-root
	@echo "==> go vet ./..."
	$(GO) vet ./...
	@echo "==> gofmt check"
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi
	@echo "==> go test -race -count=1 -timeout 9m -json ./... | testreport (failures as go test shows them; every skip with its reason at the end)$(if $(filter true,$(CI)), (CI=true: a skip is a failure),)"
	$(GO) test -race -count=1 -timeout 9m -json ./... | $(GO) run ./test/cmd/testreport
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10s

# The long forms of the soak, the randomized differential exerciser, the
# backing-filesystem matrix and the Samba test (make test runs short ones),
# then every fuzz target for a minute.
soak: require-root
	@echo "==> soak: CLAMFUSE_SOAK=1 go test -race -run 'Soak|FSX|Backing|Samba' ./test/ (30 s soak, 30 000 fsx operations, every backing filesystem, Samba oplocks and leases)"
	CLAMFUSE_SOAK=1 $(GO) test -race -count=1 -timeout 30m -run 'Soak|FSX|Backing|Samba' -v ./test/
	@$(MAKE) --no-print-directory fuzz FUZZTIME=60s

# Every fuzz target for FUZZTIME each; see test/fuzz.sh.
fuzz:
	@echo "==> fuzz: every fuzz target for $(FUZZTIME)"
	@GO=$(GO) bash test/fuzz.sh $(FUZZTIME)

check:
	@echo "==> gofmt -l ."
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi
	@echo "==> go vet ./..."
	$(GO) vet ./...
	@echo "==> only fs/, cmd/ and test/ import bazil.org/fuse (tests included)"
	@bad="$$($(GO) list -e -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... \
		| awk -v re='$(FUSE_RE)' '{ for (i = 2; i <= NF; i++) if ($$i ~ re) { print $$1; break } }' \
		| grep -v -x -E '$(FUSE_OK_RE)' || true)"; \
	if [ -n "$$bad" ]; then echo "these packages import bazil.org/fuse but may not:"; echo "$$bad"; exit 1; fi
	@echo "==> clamav/, cache/ and config/ never import bazil.org/fuse, even indirectly"
	@bad="$$($(GO) list -e -deps -test -f '{{.ImportPath}}' ./clamav/... ./cache/... ./config/... | grep -E '$(FUSE_RE)' || true)"; \
	if [ -n "$$bad" ]; then echo "clamav/, cache/ or config/ depend on:"; echo "$$bad"; exit 1; fi
	@echo "==> no file contains the EICAR test string (it is only built from pieces)"
	@hits="$$(find . \( -path ./.git -o -path ./bin -o -path ./demo -o -path ./dist -o -path ./bench/data \) -prune \
		-o -type f -print0 | xargs -0 grep -l -E '$(EICAR_RE)' || true)"; \
	if [ -n "$$hits" ]; then echo "these files contain the EICAR test string:"; echo "$$hits"; exit 1; fi
	@echo "==> $(EXAMPLE): accepted by check-config, every key, each at its default"
	@keys='/^\[/ { t = substr($$0, 2, length($$0) - 2) } /^[a-z_]+ = / { print t "." $$1 }'; \
	got="$$($(GO) run ./cmd/clamfuse check-config --config $(EXAMPLE))"; \
	missing="$$(comm -23 <(awk "$$keys" <<< "$$got" | sort) <(awk "$$keys" $(EXAMPLE) | sort))"; \
	if [ -n "$$missing" ]; then echo "$(EXAMPLE) lacks these keys:"; echo "$$missing"; exit 1; fi; \
	tmp="$$(mktemp)"; trap 'rm -f "$$tmp"' EXIT; \
	grep -E '^(\[mount\]|source = |target = )' $(EXAMPLE) > "$$tmp"; \
	want="$$($(GO) run ./cmd/clamfuse check-config --config "$$tmp")"; \
	if [ "$$got" != "$$want" ]; then echo "$(EXAMPLE) differs from the defaults:"; diff <(echo "$$want") <(echo "$$got"); exit 1; fi
	@echo "==> check passed"

demo:
	@echo "==> test/demo.sh: private clamd and a live clamfuse mount under demo/"
	bash test/demo.sh

clean:
	@echo "==> rm -rf bin demo"
	@if grep -q " $(CURDIR)/demo/mnt " /proc/mounts 2>/dev/null; then \
		echo "demo/mnt is still mounted; stop make demo first" >&2; exit 1; fi
	rm -rf bin demo

# Packaging targets (deb, rpm) live in their own file.
-include packaging/packaging.mk
include test/cmd/bench/bench.mk
