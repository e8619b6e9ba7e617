package mounttest

import "testing"

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":             "/plain",
		`/with\040space`:     "/with space",
		`/tab\011nl\012`:     "/tab\tnl\n",
		`/back\134slash`:     `/back\slash`,
		`/short\04`:          `/short\04`,
		`/not\09octal`:       `/not\09octal`,
		`/end\134`:           `/end\`,
		`\040lead\040trail`:  " lead trail",
		`/mixed\040a\134b\0`: `/mixed a\b\0`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestReadMounts: the table parses, and holds the root.
func TestReadMounts(t *testing.T) {
	ms := Mounts(t)
	for _, m := range ms {
		if m.MountPoint == "/" && m.FSType != "" && m.Options != "" {
			return
		}
	}
	t.Errorf("no root mount among %d: %+v", len(ms), ms)
}
