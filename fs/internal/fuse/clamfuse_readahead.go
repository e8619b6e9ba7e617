package fuse

// clamfuse: readahead beyond what INIT can grant.

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SetReadahead sets how many bytes the kernel reads ahead on the FUSE
// mount at mountpoint (absolute and clean, as /proc/self/mountinfo shows
// it), through the read_ahead_kb of the mount's backing device in sysfs;
// only root may. It is for after Mount: the kernel offers its default
// readahead (128 KiB) in INIT and takes the smaller of that and the
// server's MaxReadahead, so a server cannot raise it through the protocol.
// With InitMaxPages granted and 1 MiB of readahead, a sequential read of
// 1 MiB through the page cache reaches the server as one READ of 1 MiB
// rather than eight of 128 KiB.
func SetReadahead(mountpoint string, n uint32) error {
	dev, err := fuseMountDev(mountpoint)
	if err != nil {
		return err
	}
	kb := strconv.FormatUint(uint64(n/1024), 10)
	if err := os.WriteFile("/sys/class/bdi/"+dev+"/read_ahead_kb", []byte(kb), 0); err != nil {
		return fmt.Errorf("fuse: readahead of %s: %w", mountpoint, err)
	}
	return nil
}

// fuseMountDev returns the device ("0:53") of the topmost FUSE mount on
// mountpoint, from /proc/self/mountinfo: not by stat, which would ask the
// mount itself.
func fuseMountDev(mountpoint string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	dev := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || unescapeMountinfo(fields[4]) != mountpoint {
			continue
		}
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "fuse" || strings.HasPrefix(fields[i+1], "fuse.")) {
				dev = fields[2]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if dev == "" {
		return "", fmt.Errorf("fuse: no FUSE mount on %s", mountpoint)
	}
	return dev, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
