package fusefs

// clamfuse: how many readers of the request loop (clamfuse_readloop.go)
// may wait for the kernel at once, for the runtime's processor count
// (fs.SetProcs).

// IdleReaders is the most goroutines of one Server that wait in read(2)
// on /dev/fuse at once: one (readLoop).
func IdleReaders() int { return 1 }
