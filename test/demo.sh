#!/usr/bin/env bash
# test/demo.sh (make demo): clamfuse end to end on this machine, as root.
#
#  1. installs clamav-daemon, clamav, clamav-testfiles and fuse3 with apt-get
#     if any is missing;
#  2. builds bin/clamfuse and bin/testclamd;
#  3. starts a private clamd in demo/clamd with test-only signatures (never
#     the system clamd, never /run/clamav, no signature download);
#  4. mounts demo/in at demo/mnt with clamfuse, then shows a clean file
#     being read and the EICAR test file being refused;
#  5. stays mounted until Ctrl-C, then unmounts and stops clamd.
#
# DEMO_NONINTERACTIVE=1 skips step 5: it unmounts and exits right after the
# demonstration, with status 0 only if everything behaved and nothing is
# left mounted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/demo"
MNT="$DEMO/mnt"
SRC="$DEMO/in"
PACKAGES=(clamav-daemon clamav clamav-testfiles fuse3)

step() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# mounted reports whether something is mounted at $MNT.
mounted() { awk -v m="$MNT" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

# alive reports whether the process $1 (a pid we started) still runs.
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# stop_pid sends SIGTERM to our child $1 unless it has exited already,
# waits up to $2 seconds, then SIGKILL, and reaps it; it sets STOP_STATUS
# to the exit status.
stop_pid() {
	local pid=$1 secs=$2 i
	STOP_STATUS=0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		echo "demo: pid $pid still running after ${secs}s; sending SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || STOP_STATUS=$?
}

CLAMFUSE_PID=
TESTCLAMD_PID=
TAIL_PID=
CLEANED=
CLEAN_FAILED=
cleanup() {
	[ -n "$CLEANED" ] && return 0
	CLEANED=1
	if alive "$TAIL_PID"; then
		kill "$TAIL_PID" 2>/dev/null || true
		wait "$TAIL_PID" 2>/dev/null || true
	fi
	step "cleaning up"
	if [ -n "$CLAMFUSE_PID" ]; then
		if alive "$CLAMFUSE_PID"; then
			echo "sending SIGTERM to clamfuse (pid $CLAMFUSE_PID)"
		fi
		stop_pid "$CLAMFUSE_PID" 10
		echo "clamfuse exited with status $STOP_STATUS"
		[ "$STOP_STATUS" = 0 ] || CLEAN_FAILED=1
	fi
	if mounted; then
		echo "demo/mnt still mounted: umount -l $MNT"
		umount -l "$MNT" || CLEAN_FAILED=1
	fi
	if [ -n "$TESTCLAMD_PID" ]; then
		if alive "$TESTCLAMD_PID"; then
			echo "stopping the private clamd (testclamd pid $TESTCLAMD_PID)"
		fi
		stop_pid "$TESTCLAMD_PID" 15
		echo "testclamd exited with status $STOP_STATUS"
		[ "$STOP_STATUS" = 0 ] || CLEAN_FAILED=1
	fi
	rm -f "$DEMO/clamfuse.pid" "$DEMO/testclamd.pid"
	if mounted; then
		echo "demo: something is still mounted at $MNT" >&2
		CLEAN_FAILED=1
	else
		echo "nothing mounted at demo/mnt"
	fi
}
on_exit() {
	local rc=$?
	cleanup
	if [ "$rc" = 0 ] && [ -n "$CLEAN_FAILED" ]; then
		rc=1
	fi
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stale_pid stops a process left by an earlier demo that was killed before
# it could clean up: only the pid recorded in $1, only if it still runs the
# program named $2.
stale_pid() {
	local file=$1 prog=$2 pid
	[ -f "$file" ] || return 0
	pid=$(cat "$file")
	if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$prog"; then
		echo "stopping $prog left by an earlier demo (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		sleep 1
	fi
	rm -f "$file"
}

[ "$(id -u)" = 0 ] || die "run me as root: I install Debian packages and mount a FUSE filesystem"
cd "$ROOT"

step "Debian packages: ${PACKAGES[*]}"
missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 update
	apt-get -o DPkg::Lock::Timeout=300 install -y "${missing[@]}"
else
	echo "all installed"
fi

GO=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$GO" ] || die "Go not found: install Go 1.26 (go.dev/dl) into /usr/local/go"
export PATH="$(dirname "$GO"):$PATH"
VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo devel)
step "building bin/clamfuse ($VERSION) and bin/testclamd"
mkdir -p bin
"$GO" build -ldflags "-X main.version=$VERSION" -o bin/clamfuse ./cmd/clamfuse
"$GO" build -o bin/testclamd ./test/cmd/testclamd

step "preparing demo/"
stale_pid "$DEMO/clamfuse.pid" bin/clamfuse
stale_pid "$DEMO/testclamd.pid" bin/testclamd
if mounted; then
	echo "unmounting a mount left at demo/mnt by an earlier run"
	umount -l "$MNT"
fi
mkdir -p "$DEMO"
rm -rf "$SRC"
mkdir -p "$SRC" "$MNT" "$DEMO/clamd"
echo "Hello from clamfuse: this file is clean." >"$SRC/hello.txt"
# The EICAR test file, written from two pieces so that this script is not
# itself one.
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD' >"$SRC/eicar.com"
printf '%s' '-ANTIVIRUS-TEST-FILE!$H+H*' >>"$SRC/eicar.com"
echo "demo/in/hello.txt: $(wc -c <"$SRC/hello.txt") bytes, clean"
echo "demo/in/eicar.com: $(wc -c <"$SRC/eicar.com") bytes, the EICAR test file"

step "starting a private clamd in demo/clamd (bin/testclamd)"
: >"$DEMO/testclamd.out"
bin/testclamd -dir "$DEMO/clamd" >"$DEMO/testclamd.out" 2>"$DEMO/testclamd.log" &
TESTCLAMD_PID=$!
echo "$TESTCLAMD_PID" >"$DEMO/testclamd.pid"
SOCK=
for ((i = 0; i < 600; i++)); do
	SOCK=$(sed -n 's/^CLAMD_SOCKET=//p' "$DEMO/testclamd.out")
	[ -n "$SOCK" ] && break
	if ! alive "$TESTCLAMD_PID"; then
		cat "$DEMO/testclamd.log" >&2
		die "testclamd exited before clamd was ready (log above)"
	fi
	sleep 0.1
done
if [ -z "$SOCK" ]; then
	cat "$DEMO/testclamd.log" >&2
	die "clamd not ready after 60s (log above)"
fi
echo "clamd ready: CLAMD_SOCKET=$SOCK"

step "bin/clamfuse mount --clamd unix:$SOCK demo/in demo/mnt"
bin/clamfuse mount --clamd "unix:$SOCK" "$SRC" "$MNT" 2>"$DEMO/clamfuse.log" &
CLAMFUSE_PID=$!
echo "$CLAMFUSE_PID" >"$DEMO/clamfuse.pid"
for ((i = 0; i < 200; i++)); do
	mounted && break
	if ! alive "$CLAMFUSE_PID"; then
		cat "$DEMO/clamfuse.log" >&2
		die "clamfuse exited before mounting (log above)"
	fi
	sleep 0.1
done
mounted || die "demo/mnt not mounted after 20s; see demo/clamfuse.log"
echo "mounted (pid $CLAMFUSE_PID, log demo/clamfuse.log):"
sed 's/^/  | /' "$DEMO/clamfuse.log"

step "ls -l demo/mnt"
ls -l "$MNT"

step "cat demo/mnt/hello.txt"
cat "$MNT/hello.txt" || die "reading the clean file failed"

step "cat demo/mnt/eicar.com"
if out=$(cat "$MNT/eicar.com" 2>&1); then
	die "clamfuse served the EICAR test file: $out"
fi
echo "$out"
case "$out" in
*"Permission denied"*) ;;
*) die "expected Permission denied, got: $out" ;;
esac

echo
echo "clamfuse logged:"
warn=
for ((i = 0; i < 50; i++)); do
	warn=$(grep -E 'msg="infected file denied"|msg=detection' "$DEMO/clamfuse.log" || true)
	[ -n "$warn" ] && break
	sleep 0.1
done
[ -n "$warn" ] || die "no WARN line about the infected file in demo/clamfuse.log"
echo "$warn" | sed 's/^/  | /'

if [ "${DEMO_NONINTERACTIVE:-}" = 1 ]; then
	step "DEMO_NONINTERACTIVE=1: demonstration done, unmounting"
	exit 0
fi

echo
echo "mounted at demo/mnt; Ctrl-C to unmount"
echo "try from another shell:"
echo "  cat $MNT/hello.txt"
echo "  cp /usr/share/clamav-testfiles/clam.exe $MNT/ && cat $MNT/clam.exe"
echo "clamfuse's log (demo/clamfuse.log) follows:"
tail -n 0 -f --pid="$CLAMFUSE_PID" "$DEMO/clamfuse.log" &
TAIL_PID=$!
# Returns when a signal arrives (the traps then clean up) or when clamfuse
# exits by itself, e.g. after fusermount3 -u demo/mnt.
status=0
wait "$CLAMFUSE_PID" || status=$?
CLAMFUSE_PID=
echo "clamfuse exited with status $status"
exit "$status"
