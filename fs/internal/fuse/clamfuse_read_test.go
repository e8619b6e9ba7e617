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
		if !ok || r.Size != size {
			t.Fatalf("%s: got %v, want a READ of %d bytes", tt.name, req, size)
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
