package fuse

// clamfuse: mount options beyond upstream's.

import "fmt"

// RequestInitFlags2 asks the kernel for the INIT flags above bit 31 in
// flags, as RequestInitFlags does for the others; Conn.Features2 reports
// what was granted (nothing from a kernel before 5.17, protocol 7.36).
// Only flags in RequestableInitFlags2 may be asked for, and Mount fails
// on others; InitPassthrough is asked for with Passthrough.
func RequestInitFlags2(flags InitFlags2) MountOption {
	return func(conf *mountConfig) error {
		if bad := flags &^ RequestableInitFlags2; bad != 0 {
			return fmt.Errorf("fuse: RequestInitFlags2: not supported: %v", bad)
		}
		conf.ext.initFlags2 |= flags
		return nil
	}
}

// RequestableInitFlags2 are the flags RequestInitFlags2 accepts:
// InitHasExpireOnly, the kernel's support of Conn.ExpireEntry.
const RequestableInitFlags2 = InitHasExpireOnly

// Passthrough asks the kernel for FUSE passthrough (protocol 7.40, Linux
// 6.9 with CONFIG_FUSE_PASSTHROUGH): a handle opened with OpenPassthrough
// and a BackingID from Conn.BackingOpen is read and written by the
// kernel on that backing file directly, with no READ or WRITE reaching
// the server. Features2 has InitPassthrough when granted (not before
// Linux 6.9, nor without CONFIG_FUSE_PASSTHROUGH); the kernel does
// not grant it with the writeback cache (WritebackCache), nor does this
// package ask for it then.
//
// maxStackDepth is the mount's stack depth, 1 or 2: backing files must
// be on file systems of a smaller one (1: not on overlayfs or another
// stacking file system), and only a depth of 1 leaves room for stacking
// (overlayfs) on the mount itself.
func Passthrough(maxStackDepth int) MountOption {
	return func(conf *mountConfig) error {
		if maxStackDepth < 1 || maxStackDepth > maxStackDepthLimit {
			return fmt.Errorf("fuse: Passthrough: stack depth %d not in 1..%d", maxStackDepth, maxStackDepthLimit)
		}
		conf.ext.initFlags2 |= InitPassthrough
		conf.ext.maxStackDepth = uint32(maxStackDepth)
		return nil
	}
}

// maxStackDepthLimit is the kernel's FILESYSTEM_MAX_STACK_DEPTH.
const maxStackDepthLimit = 2

var initFlags2Names = []flagName{
	{uint32(InitSecurityCtx), "InitSecurityCtx"},
	{uint32(InitHasInodeDAX), "InitHasInodeDAX"},
	{uint32(InitCreateSuppGroup), "InitCreateSuppGroup"},
	{uint32(InitHasExpireOnly), "InitHasExpireOnly"},
	{uint32(InitDirectIOAllowMmap), "InitDirectIOAllowMmap"},
	{uint32(InitPassthrough), "InitPassthrough"},
	{uint32(InitNoExportSupport), "InitNoExportSupport"},
	{uint32(InitHasResend), "InitHasResend"},
	{uint32(InitAllowIdmap), "InitAllowIdmap"},
	{uint32(InitOverIOURing), "InitOverIOURing"},
	{uint32(InitRequestTimeout), "InitRequestTimeout"},
}

func (fl InitFlags2) String() string {
	return flagString(uint32(fl), initFlags2Names)
}
