package test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestSELinuxLabel: a file with no SELinux label reads as a filesystem
// without labels does (EOPNOTSUPP, named ENOTSUP on Linux, so `ls -l` stops asking, see
// fs.TestLsAsksLabelOnce), while a label stored on the backing file
// still reads through the mount, and other missing attributes are still
// ENODATA.
func TestSELinuxLabel(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", c.Address()}})
	fsopBinary(t)
	putFile(t, m.Backing("plain"), []byte("x"))
	putFile(t, m.Backing("labelled"), []byte("y"))
	const label = "system_u:object_r:user_home_t:s0"
	if err := unix.Setxattr(m.Backing("labelled"), "security.selinux", []byte(label), 0); err != nil {
		t.Fatalf("label the backing file: %v", err)
	}
	for _, tc := range []struct{ file, attr, want string }{
		{"plain", "security.selinux", "ENOTSUP"},
		{"labelled", "security.selinux", "ok \"" + label + "\""},
		{"plain", "user.missing", "ENODATA"},
		{"plain", "security.other", "ENODATA"},
	} {
		if got := fsop(nil, "getxattr", m.Path(tc.file), tc.attr); got != tc.want {
			t.Errorf("getxattr %s %s through the mount: %s, want %s", tc.file, tc.attr, got, tc.want)
		}
	}
}
