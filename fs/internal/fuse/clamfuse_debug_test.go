package fuse

import "testing"

func TestIsNopDebug(t *testing.T) {
	var got []interface{}
	for _, tc := range []struct {
		name string
		f    func(msg interface{})
		want bool
	}{
		{"the default", Debug, true},
		{"nop", nop, true},
		{"nil", nil, false},
		{"a logger", func(msg interface{}) { got = append(got, msg) }, false},
	} {
		if IsNopDebug(tc.f) != tc.want {
			t.Errorf("%s: IsNopDebug = %v, want %v", tc.name, !tc.want, tc.want)
		}
	}
}
