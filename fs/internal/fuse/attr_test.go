package fuse

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestUnixTime(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
		sec  int64 // as the kernel reads fuse_attr's u64 seconds
		nsec uint32
	}{
		{"epoch", time.Unix(0, 0), 0, 0},
		{"2001", time.Unix(1000000000, 123456789), 1000000000, 123456789},
		{"half a second before 1970", time.Unix(-1, 500000000), -1, 500000000},
		{"5ns before 1970", time.Unix(0, -5), -1, 999999995},
		{"1969, whole", time.Unix(-100000, 0), -100000, 0},
		{"after 2262", time.Unix(10000000000, 123), 10000000000, 123},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), 253402300799, 999999999},
		{"year 1000", time.Date(1000, 1, 1, 0, 0, 0, 1, time.UTC), -30610224000, 1},
		{"in another zone", time.Unix(-1, 5).In(time.FixedZone("x", 3600)), -1, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec, nsec := unixTime(tt.t)
			if int64(sec) != tt.sec || nsec != tt.nsec {
				t.Errorf("unixTime(%v) = %d, %d; want %d, %d", tt.t, int64(sec), nsec, tt.sec, tt.nsec)
			}
			// Round trip as SetattrRequest decodes times.
			if back := time.Unix(int64(sec), int64(nsec)); !back.Equal(tt.t) {
				t.Errorf("time.Unix(unixTime(%v)) = %v", tt.t, back)
			}
		})
	}
}

func TestAttrMode(t *testing.T) {
	tests := []struct {
		mode os.FileMode
		want uint32
	}{
		{os.ModeDir | 0o755, syscall.S_IFDIR | 0o755},
		{os.ModeDir | os.ModeSticky | 0o777, syscall.S_IFDIR | 0o1777},
		{os.ModeSticky | os.ModeSetuid | os.ModeSetgid | 0o777, syscall.S_IFREG | 0o7777},
		{os.ModeSetgid | 0o755, syscall.S_IFREG | 0o2755},
		{os.ModeSymlink | 0o777, syscall.S_IFLNK | 0o777},
	}
	for _, tt := range tests {
		var out attr
		a := Attr{Mode: tt.mode}
		a.attr(&out, Protocol{7, 33})
		if out.Mode != tt.want {
			t.Errorf("Attr{Mode: %v}.attr: mode %o, want %o", tt.mode, out.Mode, tt.want)
		}
	}
}
