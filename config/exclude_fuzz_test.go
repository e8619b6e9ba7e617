package config

import (
	"path"
	"strings"
	"testing"
)

// FuzzExclude checks the exclude matcher on any patterns and paths, valid
// or not (Validate rejects bad patterns, but IsExcluded must not rely on
// it):
//
//   - it never panics, and answers the same twice;
//   - the root ("" or ".") is never excluded, and nothing is without
//     patterns;
//   - a pattern without "/" that matches the last element of the path
//     excludes it, and a pattern that matches the whole path excludes it;
//   - nothing else does: with one pattern, the answer is exactly that
//     rule, and with two it is the OR of each alone.
func FuzzExclude(f *testing.F) {
	for _, s := range [][3]string{
		{"*.iso", "a/b/x.iso", "tmp/*"},
		{"tmp/*", "tmp/x", "*.iso"},
		{"tmp/*", "a/tmp/x", ""},
		{"tmp/*", "tmp/a/x", "["},
		{"*", "", "."},
		{"*", ".", "*"},
		{"[", "[", "\\"},
		{"\\*", "*", "a\\"},
		{"[a-", "a", "[]a]"},
		{"[^/]", "x/y", "*/*"},
		{"?", "a/b", "a/?"},
		{"**", "a/b/c", "a/**"},
		{"x.iso", "x.iso/", "/x.iso"},
		{"*.ISO", "caf\u00e9.iso", "\xff*"},
		{"a/b", "a//b", "a/./b"},
		{"..", "../x", "*/.."},
		{"[\\]]", "]", "[!a]"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, g1, rel, g2 string) {
		one := Config{Scan: Scan{Exclude: []string{g1}}}
		two := Config{Scan: Scan{Exclude: []string{g1, g2}}}
		none := Config{Scan: Scan{Exclude: nil}}
		got := one.IsExcluded(rel)
		if again := one.IsExcluded(rel); again != got {
			t.Fatalf("IsExcluded(%q) with %q: %v, then %v", rel, g1, got, again)
		}
		if none.IsExcluded(rel) {
			t.Fatalf("IsExcluded(%q) with no patterns", rel)
		}
		if (rel == "" || rel == ".") && (got || two.IsExcluded(rel)) {
			t.Fatalf("the root (%q) is excluded by %q, %q", rel, g1, g2)
		}
		if rel == "" || rel == "." {
			return
		}
		want := matches(g1, rel) || (!strings.Contains(g1, "/") && matches(g1, path.Base(rel)))
		if got != want {
			t.Fatalf("IsExcluded(%q) with %q = %v, want %v (whole path matches: %v, base %q matches: %v)",
				rel, g1, got, want, matches(g1, rel), path.Base(rel), matches(g1, path.Base(rel)))
		}
		if !strings.Contains(g1, "/") && matches(g1, path.Base(rel)) && !got {
			t.Fatalf("pattern %q without / matches the base name of %q, which is not excluded", g1, rel)
		}
		other := Config{Scan: Scan{Exclude: []string{g2}}}
		if both := two.IsExcluded(rel); both != (got || other.IsExcluded(rel)) {
			t.Fatalf("IsExcluded(%q) with %q and %q = %v; alone: %v, %v", rel, g1, g2, both, got, other.IsExcluded(rel))
		}
	})
}

func matches(pattern, name string) bool {
	ok, _ := path.Match(pattern, name)
	return ok
}
