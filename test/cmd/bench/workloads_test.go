package main

import (
	"slices"
	"testing"
)

func TestInTurn(t *testing.T) {
	a, b, c := &system{name: "a"}, &system{name: "b"}, &system{name: "c"}
	all := []*system{a, b, c}
	for _, tc := range []struct {
		run  int
		want []string
	}{
		{0, []string{"a", "b", "c"}},
		{1, []string{"c", "b", "a"}},
		{2, []string{"a", "b", "c"}},
		{5, []string{"c", "b", "a"}},
	} {
		var got []string
		for _, s := range inTurn(all, tc.run) {
			got = append(got, s.name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("run %d: %v, want %v", tc.run, got, tc.want)
		}
	}
	if all[0] != a {
		t.Errorf("inTurn reordered its argument")
	}
}
