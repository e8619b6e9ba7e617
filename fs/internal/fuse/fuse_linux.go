package fuse

// Maximum file write size we are prepared to receive from the kernel.
//
// Linux 4.2.0 has been observed to cap this value at 128kB
// (FUSE_MAX_PAGES_PER_REQ=32, 4kB pages).
// clamfuse: begin max write
//
// Since Linux 4.20 a server that asks for InitMaxPages may raise it, up
// to the kernel's max_pages_limit (256 pages, 1 MiB, by default); see
// clamfuse_init.go. The buffers a request is read into are this big, but
// a request that turns out small is copied out of it (clamfuse_buffer.go).
const maxWrite = 1 << 20

// clamfuse: end max write
