# Packaging: included by the Makefile, or run alone with
# `make -f packaging/packaging.mk deb rpm` from the top of the repository.
#
#   make deb     dist/clamfuse_<version>_<arch>.deb, for each PKG_ARCHES
#   make rpm     dist/clamfuse-<version>.<arch>.rpm, for each PKG_ARCHES
#   make man     the gzipped man pages, in $(PKG_STAGE)
#   make nfpm    build the pinned nfpm (CI runs it first; it needs the Go
#                module proxy the first time)
#
# Variables (each may be set on the command line):
#   PKG_ARCHES      GOARCH values to package: amd64 arm64 (the binary is
#                   pure Go, CGO_ENABLED=0, so every one cross-compiles);
#                   PKG_ARCH=arm64 alone packages that one
#   PKG_VERSION     packaging/version.sh (git describe, made a valid deb
#                   and rpm version); built into the binary: `clamfuse version`
#   PKG_MAINTAINER  the Maintainer/Packager field, "Name <address>";
#                   default a neutral project address, set your own when
#                   you publish packages
#   PKG_DIST        where the packages go: dist
# e.g. make deb PKG_VERSION=1.2.3 PKG_ARCH=arm64 PKG_MAINTAINER='Ops <ops@example.org>'

GO             ?= go
NFPM_VERSION   := v2.45.2
NFPM_DIR       := dist/tools/nfpm-$(NFPM_VERSION)
NFPM           := $(NFPM_DIR)/nfpm
# Computed on first use, once (the Makefile includes this file for every
# target, not only these).
ifndef PKG_VERSION
PKG_VERSION = $(eval PKG_VERSION := $$(shell sh packaging/version.sh))$(PKG_VERSION)
endif
# PKG_ARCH is the one architecture a sub-make packages; given on the
# command line, it is the only one packaged.
ifdef PKG_ARCH
PKG_ARCHES     ?= $(PKG_ARCH)
else
PKG_ARCHES     ?= amd64 arm64
PKG_ARCH = $(eval PKG_ARCH := $$(shell $(GO) env GOARCH))$(PKG_ARCH)
endif
PKG_DIST       ?= dist
PKG_STAGE      ?= $(PKG_DIST)/stage-$(PKG_ARCH)
PKG_MAINTAINER ?= clamfuse maintainers <clamfuse@users.noreply.github.com>
# Dates in the packages: the last commit's, so a rebuild is identical.
ifndef SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH = $(eval SOURCE_DATE_EPOCH := $$(shell GIT_OPTIONAL_LOCKS=0 git log -1 --format=%ct 2>/dev/null || date +%s))$(SOURCE_DATE_EPOCH)
endif

# Package architecture names of GOARCH.
PKG_RPM_ARCH = $(or $(PKG_RPM_ARCH_$(PKG_ARCH)),$(PKG_ARCH))
PKG_RPM_ARCH_amd64 := x86_64
PKG_RPM_ARCH_arm64 := aarch64
PKG_RPM_ARCH_386   := i386
PKG_RPM_ARCH_ppc64le := ppc64le
PKG_DEB_ARCH = $(or $(PKG_DEB_ARCH_$(PKG_ARCH)),$(PKG_ARCH))
PKG_DEB_ARCH_386   := i386
PKG_DEB_ARCH_ppc64le := ppc64el

PKG_DEB = $(PKG_DIST)/clamfuse_$(PKG_VERSION)_$(PKG_DEB_ARCH).deb
PKG_RPM = $(PKG_DIST)/clamfuse-$(PKG_VERSION).$(PKG_RPM_ARCH).rpm

PKG_ENV = PKG_VERSION='$(PKG_VERSION)' PKG_ARCH='$(PKG_ARCH)' PKG_STAGE='$(PKG_STAGE)' \
	PKG_MAINTAINER='$(PKG_MAINTAINER)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)'

.PHONY: deb rpm man nfpm pkg-stage pkg-arches pkg-deb pkg-rpm

# `make deb rpm` builds each architecture once (one sub-make per
# architecture, making the formats asked for), with one version and date.
PKG_FORMATS = $(or $(filter deb rpm,$(MAKECMDGOALS)),deb rpm)

deb rpm: pkg-arches
	@:

pkg-arches: $(NFPM)
	@for arch in $(PKG_ARCHES); do \
		echo "==> $(PKG_FORMATS) for $$arch"; \
		$(MAKE) --no-print-directory -f packaging/packaging.mk GO='$(GO)' PKG_ARCH="$$arch" \
			PKG_VERSION='$(PKG_VERSION)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' \
			PKG_MAINTAINER='$(PKG_MAINTAINER)' PKG_DIST='$(PKG_DIST)' \
			$(addprefix pkg-,$(PKG_FORMATS)) || exit 1; \
	done

pkg-deb: pkg-stage $(NFPM)
	@echo "==> nfpm package -p deb: $(PKG_DEB)"
	$(PKG_ENV) $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(PKG_DEB)

pkg-rpm: pkg-stage $(NFPM)
	@echo "==> nfpm package -p rpm: $(PKG_RPM)"
	$(PKG_ENV) $(NFPM) package --config packaging/nfpm.yaml --packager rpm --target $(PKG_RPM)

nfpm: $(NFPM)

$(NFPM):
	@echo "==> go install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) into $(NFPM_DIR)"
	@mkdir -p $(NFPM_DIR)
	GOBIN="$(abspath $(NFPM_DIR))" $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

# The binary (static, version built in), man pages and changelogs, staged
# for nfpm. Always rebuilt: the version or the sources may have changed.
pkg-stage: man
	@echo "==> go build $(PKG_STAGE)/clamfuse (version $(PKG_VERSION), linux/$(PKG_ARCH), static)"
	CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.version=$(PKG_VERSION)" -o $(PKG_STAGE)/clamfuse ./cmd/clamfuse
	@echo "==> changelogs for $(PKG_VERSION)"
	@date="$$(LC_ALL=C date -u -R -d @$(SOURCE_DATE_EPOCH))"; \
	{ printf 'clamfuse (%s) unstable; urgency=medium\n\n' '$(PKG_VERSION)'; \
	  printf '  * Built from the clamfuse sources at version %s.\n' '$(PKG_VERSION)'; \
	  printf '    Changes: https://github.com/clamfuse/clamfuse/commits\n\n'; \
	  printf ' -- %s  %s\n' '$(PKG_MAINTAINER)' "$$date"; } > $(PKG_STAGE)/changelog.Debian; \
	{ printf 'clamfuse %s (%s)\n\n' '$(PKG_VERSION)' "$$date"; \
	  printf '  Built from the clamfuse sources at version %s.\n' '$(PKG_VERSION)'; \
	  printf '  Changes: https://github.com/clamfuse/clamfuse/commits\n'; } > $(PKG_STAGE)/changelog
	gzip -9nf $(PKG_STAGE)/changelog.Debian $(PKG_STAGE)/changelog

man:
	@echo "==> gzip -9n packaging/man/* into $(PKG_STAGE)"
	@mkdir -p $(PKG_STAGE)
	gzip -9nc packaging/man/clamfuse.8 > $(PKG_STAGE)/clamfuse.8.gz
	gzip -9nc packaging/man/clamfuse.toml.5 > $(PKG_STAGE)/clamfuse.toml.5.gz
