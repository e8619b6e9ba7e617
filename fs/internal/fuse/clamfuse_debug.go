package fuse

// clamfuse: whether a debug function is Debug's default, which drops
// every message, so that the server need not make the messages of each
// request (fusefs, blocks "request log" and "response log" of serve.go).

import "reflect"

// IsNopDebug reports whether f is Debug's default, which does nothing
// with the messages it is given.
func IsNopDebug(f func(msg interface{})) bool {
	return f != nil && reflect.ValueOf(f).Pointer() == reflect.ValueOf(nop).Pointer()
}
