package main

// Exit codes of clamfuse, in one place.
const (
	exitOK      = 0 // done, or unmounted cleanly
	exitFailure = 1 // a runtime failure: the mount could not be made or served
	exitUsage   = 2 // bad input: flags, config, paths; nothing was mounted
)
