package fs

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
)

func TestDeviceIn(t *testing.T) {
	const table = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
301 27 0:63 / /tmp/a\040b/mnt rw,nosuid,nodev,relatime - fuse.clamfuse /tmp/src rw,user_id=0
`
	for _, tc := range []struct {
		name string
		dev  device
		want bool
	}{
		{"the FUSE mount", device{0, 63}, true},
		{"the root", device{254, 0}, true},
		{"a detached mount", device{0, 64}, false},
		{"a minor that only shares digits", device{0, 6}, false},
		{"another major", device{1, 63}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := deviceIn(strings.NewReader(table), tc.dev)
			if err != nil || got != tc.want {
				t.Errorf("deviceIn(%v) = %v, %v; want %v", tc.dev, got, err, tc.want)
			}
		})
	}
}

func TestServingEnded(t *testing.T) {
	other := errors.New("fuse: broken")
	for _, tc := range []struct {
		name    string
		err     error
		mounted bool
		want    error
	}{
		{"unmounted", nil, false, nil},
		{"ECONNABORTED after a lazy unmount", syscall.ECONNABORTED, false, nil},
		{"ENODEV after a lazy unmount", syscall.ENODEV, false, nil},
		{"aborted while mounted", nil, true, errAborted},
		{"ECONNABORTED while mounted", syscall.ECONNABORTED, true, errAborted},
		{"another error", other, false, other},
		{"another error while mounted", other, true, other},
		{"end of file", io.ErrUnexpectedEOF, false, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := servingEnded(tc.err, func() bool { return tc.mounted }); got != tc.want {
				t.Errorf("servingEnded(%v, mounted=%v) = %v; want %v", tc.err, tc.mounted, got, tc.want)
			}
		})
	}
}
