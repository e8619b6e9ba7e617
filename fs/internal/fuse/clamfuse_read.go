package fuse

// clamfuse: READ replies sent without a copy of the data.

// ResponseData returns the slice a handler may read the data of a reply
// to r into: empty, with room for r.Size bytes, inside the buffer of the
// reply itself, after the room for its header. When the ReadResponse's
// Data still starts there, Respond sends that buffer as is, instead of
// allocating another one and copying the data into it: a READ costs one
// allocation of its size and no copy, instead of two and a copy.
func (r *ReadRequest) ResponseData() []byte {
	r.out = newBuffer(uintptr(r.Size))
	return r.out[len(r.out):len(r.out)]
}

// inPlace returns the reply to r with data as its contents when data
// starts where ResponseData left room for it, else nil.
func (r *ReadRequest) inPlace(data []byte) buffer {
	out := r.out
	r.out = nil
	h := len(out)
	if len(data) == 0 || h+len(data) > cap(out) || &out[:h+1][h] != &data[0] {
		return nil
	}
	return out[:h+len(data)]
}
