#!/bin/sh
# Prints the version of the source tree in a form that is valid, and sorts
# right, as a .deb and an .rpm version (and goes into `clamfuse version`):
#
#   tag v1.2.3                          -> 1.2.3
#   tag v1.2.3-rc1                      -> 1.2.3~rc1              (before 1.2.3)
#   4 commits after v1.2.3, at abc1234  -> 1.2.3+git4.abc1234     (after 1.2.3)
#   no tag: commit abc1234 of 2025-11-25 -> 0.0.0~git20251125.abc1234
#   not a git checkout                  -> 0.0.0~unknown
#
# Only tags that look like versions (v1, v1.2.3, ...) count. It only reads
# the repository (no --dirty: that would refresh the index).
set -eu
export GIT_OPTIONAL_LOCKS=0

if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	# desc is TAG-N-gHASH; the tag itself may contain hyphens.
	hash=${desc##*-g}
	rest=${desc%-g*}
	n=${rest##*-}
	tag=${rest%-*}
	v=$(printf '%s' "${tag#v}" | tr -- '-_' '~~')
	if [ "$n" = 0 ]; then
		printf '%s\n' "$v"
	else
		printf '%s+git%s.%s\n' "$v" "$n" "$hash"
	fi
elif hash=$(git rev-parse --short=7 HEAD 2>/dev/null); then
	date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d)
	printf '0.0.0~git%s.%s\n' "$date" "$hash"
else
	echo "0.0.0~unknown"
fi
