package fuse

import (
	"bytes"
	"os"
	"testing"
)

// TestReadRespondInPlace: a READ's data read into ResponseData is sent as
// is, in the reply's own buffer (one allocation of the READ's size, no
// copy); data anywhere else (another slice, resliced, grown past the room
// made, nothing) is copied as before. The kernel gets the same reply
// either way.
func TestReadRespondInPlace(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 33}, 0)
	const size = 64 << 10
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 13)
	}
	tests := []struct {
		name    string
		fill    func(room []byte) []byte // what the handler leaves in Data
		inPlace bool
	}{
		{"read into the room", func(room []byte) []byte { return append(room, want...) }, true},
		{"short read into the room", func(room []byte) []byte { return append(room, want[:100]...) }, true},
		{"another slice", func([]byte) []byte { return bytes.Clone(want) }, false},
		{"resliced", func(room []byte) []byte { return append(room, 0, 1, 2)[1:] }, false},
		{"grown past the room", func(room []byte) []byte { return append(room, append(bytes.Clone(want), 9)...) }, false},
		{"nothing", func(room []byte) []byte { return room }, false},
	}
	for i, tt := range tests {
		unique := uint64(10 + i)
		r := sendRead(t, c, k, unique, size)
		if r.Size != size {
			t.Fatalf("%s: got %v, want a READ of %d bytes", tt.name, r, size)
		}
		room := r.ResponseData()
		if len(room) != 0 || cap(room) != size {
			t.Fatalf("%s: ResponseData of length %d and room %d, want 0 and %d", tt.name, len(room), cap(room), size)
		}
		data := tt.fill(room)
		out := r.out
		if got := r.inPlace(data) != nil; got != tt.inPlace {
			t.Errorf("%s: sent in place: %v, want %v", tt.name, got, tt.inPlace)
		}
		r.out = out // inPlace forgets it; Respond decides again
		r.Respond(&ReadResponse{Data: data})
		errno, body := k.reply(unique)
		if errno != 0 || !bytes.Equal(body, data) {
			t.Errorf("%s: reply error %d, %d bytes; want the %d bytes of Data", tt.name, errno, len(body), len(data))
		}
	}
}

// TestReadBufsReused: a READ's reply buffer comes from readBufs and goes
// back after the reply; a buffer that held an earlier reply (here filled
// with 0xff, header included) sends only the header, zeroed but for its
// length and id, and the bytes read into it now, whatever the earlier
// reply left beyond them. The READs are of sizes of a class, inside one
// and over every class (not pooled).
func TestReadBufsReused(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 33}, 0)
	tests := []struct {
		name   string
		size   uint32 // the READ's
		n      int    // bytes read into the room
		pooled bool
	}{
		{"one page, read whole", 4 << 10, 4 << 10, true},
		{"one page, short", 4 << 10, 10, true},
		{"between classes, short", 20 << 10, 16 << 10, true},
		{"largest class", 1 << 20, 1 << 20, true},
		{"nothing read", 8 << 10, 0, true},
		{"over every class", 2 << 20, 3, false},
	}
	for i, tt := range tests {
		// An earlier reply's bytes in the buffer the READ may get.
		b, p := getReadBuf(int(tt.size))
		if (p != nil) != tt.pooled {
			t.Fatalf("%s: pooled %v, want %v", tt.name, p != nil, tt.pooled)
		}
		if p != nil {
			full := (*p)[:cap(*p)]
			for j := range full {
				full[j] = 0xff
			}
			putReadBuf(p)
		} else if cap(b)-len(b) < int(tt.size) {
			t.Fatalf("%s: room for %d bytes, want %d", tt.name, cap(b)-len(b), tt.size)
		}

		unique := uint64(100 + i)
		r := sendRead(t, c, k, unique, tt.size)
		room := r.ResponseData()
		if len(room) != 0 || cap(room) < int(tt.size) {
			t.Fatalf("%s: ResponseData of length %d and room %d, want 0 and at least %d", tt.name, len(room), cap(room), tt.size)
		}
		data := room
		for j := range tt.n {
			data = append(data, byte(j*7+i))
		}
		r.Respond(&ReadResponse{Data: data})
		if r.pooled != nil || r.out != nil {
			t.Errorf("%s: the reply buffer is still the request's after Respond", tt.name)
		}
		errno, body := k.reply(unique)
		if errno != 0 || !bytes.Equal(body, data) {
			t.Errorf("%s: reply error %d, %d bytes; want 0 and the %d bytes read", tt.name, errno, len(body), len(data))
		}
	}
}

// sendRead has the fake kernel k send a READ of size bytes (handle 5,
// offset 0, node 9) as request unique, and returns it as c read it.
func sendRead(t *testing.T, c *Conn, k *fakeKernel, unique uint64, size uint32) *ReadRequest {
	t.Helper()
	// fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding.
	in := append(u64s(5, 0), u32s(size, 0)...)
	in = append(in, u64s(0)...)
	in = append(in, u32s(uint32(os.O_RDONLY), 0)...)
	k.send(opRead, unique, 9, in)
	req, err := c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	r, ok := req.(*ReadRequest)
	if !ok {
		t.Fatalf("read %T, want a READ", req)
	}
	return r
}
