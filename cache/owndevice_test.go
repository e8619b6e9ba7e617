package cache

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOwnDevice: the devices of the filesystems this machine has
// mounted, as ownDevice sees them (leases are taken on its disks, not on
// loop or other virtual devices, nor on Btrfs's anonymous st_dev): only
// logged, since that depends on the machine, and ownMount, kept by mount,
// agrees; but a loop device is never one.
func TestOwnDevice(t *testing.T) {
	for _, p := range []string{"/", os.TempDir(), "/dev/shm"} {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			continue
		}
		real, _ := filepath.EvalSymlinks("/sys/dev/block/" + strconv.Itoa(int(unix.Major(st.Dev))) + ":" + strconv.Itoa(int(unix.Minor(st.Dev))))
		own := ownDevice(st.Dev)
		t.Logf("%s: device %d:%d (%s): own %v", p, unix.Major(st.Dev), unix.Minor(st.Dev), real, own)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // looked up, then kept for the mount
			if got := ownMount(fd, st.Dev); got != own {
				t.Errorf("%s: ownMount %v, ownDevice %v", p, got, own)
			}
			// As on a kernel without unique mount IDs (Debian 12's).
			if got := ownDeviceKept(st.Dev); got != own {
				t.Errorf("%s: ownDeviceKept %v, ownDevice %v", p, got, own)
			}
		}
		unix.Close(fd)
	}
	for _, loop := range []uint64{unix.Mkdev(7, 0), unix.Mkdev(7, 1), unix.Mkdev(43, 0), unix.Mkdev(0, 30)} {
		if ownDevice(loop) || ownDeviceKept(loop) {
			t.Errorf("device %d:%d: own; want not (loop, nbd, anonymous)", unix.Major(loop), unix.Minor(loop))
		}
	}
}

// TestOwnDeviceKeptByLink: an answer kept for a device number is used
// again only while the number's sysfs link names the same device: one
// kept for the same number under another link (a device gone, its
// number given to a loop device) is not.
func TestOwnDeviceKeptByLink(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat(os.TempDir(), &st); err != nil {
		t.Fatal(err)
	}
	link, err := os.Readlink(devSys(st.Dev))
	if err != nil || strings.Contains(link, "/virtual/") {
		t.Logf("NOT COVERED: %s is not on a disk (%q, %v)", os.TempDir(), link, err)
		return
	}
	own := ownDevice(st.Dev)
	ownDevs.mu.Lock()
	if ownDevs.by == nil {
		ownDevs.by = make(map[uint64]ownDev)
	}
	ownDevs.by[st.Dev] = ownDev{link: "../../devices/virtual/block/loop9", own: !own}
	ownDevs.mu.Unlock()
	if got := ownDeviceKept(st.Dev); got != own {
		t.Errorf("ownDeviceKept used an answer kept under another sysfs link: %v; want %v", got, own)
	}
	ownDevs.mu.Lock()
	e := ownDevs.by[st.Dev]
	ownDevs.mu.Unlock()
	if e.link != link || e.own != own {
		t.Errorf("kept %+v; want the answer for %s", e, link)
	}
}

// TestNvmeLocal: an NVMe subsystem is the machine's own only when all its
// controllers are PCIe ones (a sysfs tree made up for the test).
func TestNvmeLocal(t *testing.T) {
	for _, tt := range []struct {
		name       string
		transports []string
		want       bool
	}{
		{"one pcie", []string{"pcie"}, true},
		{"two pcie", []string{"pcie", "pcie"}, true},
		{"tcp", []string{"tcp"}, false},
		{"pcie and rdma", []string{"pcie", "rdma"}, false},
		{"no controller", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "nvme0n1"), 0o755); err != nil {
				t.Fatal(err)
			}
			for i, tr := range tt.transports {
				c := filepath.Join(dir, "nvme"+strconv.Itoa(i))
				if err := os.Mkdir(c, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(c, "transport"), []byte(tr+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := nvmeLocal(dir); got != tt.want {
				t.Errorf("nvmeLocal: %v; want %v", got, tt.want)
			}
		})
	}
}
