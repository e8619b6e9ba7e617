package fuse

import "testing"

// TestRename2Request decodes RENAME2 (fuse_rename2_in: newdir, flags,
// padding; "old\0new\0") and RENAME, which has no flags.
func TestRename2Request(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 40}, 0)
	for _, tt := range []struct {
		op    uint32
		in    []byte
		names string
		want  *RenameRequest // nil: malformed
	}{
		{opRename2, append(u64s(8), u32s(uint32(RenameNoReplace), 0)...), "old\x00new\x00",
			&RenameRequest{NewDir: 8, OldName: "old", NewName: "new", Flags: RenameNoReplace}},
		{opRename2, append(u64s(9), u32s(uint32(RenameExchange|RenameWhiteout), 0)...), "a\x00b\x00",
			&RenameRequest{NewDir: 9, OldName: "a", NewName: "b", Flags: RenameExchange | RenameWhiteout}},
		{opRename, u64s(8), "old\x00new\x00", &RenameRequest{NewDir: 8, OldName: "old", NewName: "new"}},
		{opRename2, append(u64s(8), u32s(1, 0)...), "old\x00new", nil}, // no final NUL
		{opRename2, u64s(8), "a\x00b\x00", nil},                        // no flags: short
	} {
		k.send(tt.op, 30, 2, tt.in, []byte(tt.names))
		req, err := c.ReadRequest()
		if tt.want == nil {
			if err == nil {
				t.Errorf("%q: decoded %v, want an error", tt.names, req)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.names, err)
		}
		r, ok := req.(*RenameRequest)
		if !ok || r.NewDir != tt.want.NewDir || r.OldName != tt.want.OldName || r.NewName != tt.want.NewName || r.Flags != tt.want.Flags || r.Node != 2 {
			t.Errorf("decoded %T %+v, want %+v", req, req, tt.want)
			continue
		}
		r.Respond()
		if errno, body := k.reply(30); errno != 0 || len(body) != 0 {
			t.Errorf("reply error %d, %d bytes", errno, len(body))
		}
	}
	if got, want := (RenameNoReplace | RenameWhiteout).String(), "RenameNoReplace+RenameWhiteout"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
