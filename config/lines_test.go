package config

import (
	"reflect"
	"testing"
)

func TestKeyLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]int
	}{
		{"tables", "# c\n[a]\nx = 1\n\n[b . c] # c\ny = 2\n",
			map[string]int{"a": 2, "a.x": 3, "b.c": 5, "b.c.y": 6}},
		{"dotted and quoted", "a.b = 1\n\"q.k\" = 2\n'l' . \"m\\u0041\" = 3\n",
			map[string]int{"a.b": 1, `"q.k"`: 2, "l.mA": 3}},
		{"first definition wins", "[[t]]\nx = 1\n[[t]]\nx = 2\n",
			map[string]int{"t": 1, "t.x": 2}},
		{"inline tables", "a = { b = 1, c = { d = [1, 2] } }\ne = [\n  { f = 1 },\n  { f = 2, g = 3 },\n]\n",
			map[string]int{"a": 1, "a.b": 1, "a.c": 1, "a.c.d": 1, "e": 2, "e.f": 3, "e.g": 4}},
		{"things that look like keys", "" +
			"s = \"x = 1 # [t]\"\n" +
			"m = \"\"\"\n[t]\nk = \\\"\"\"\n\"\"\"\n" +
			"l = '''\n[t]\n'''''\n" +
			"a = [ # [t]\n  \"k = 1\", # k = 2\n  '[t]',\n]\n" +
			"z = 1\n",
			map[string]int{"s": 1, "m": 2, "l": 6, "a": 9, "z": 13}},
		{"datetimes and numbers", "d = 1979-05-27 07:32:00Z\nn = [+inf, -1_000, 0x1f, 1e3]\nt = 07:32:00\nx = true\n",
			map[string]int{"d": 1, "n": 2, "t": 3, "x": 4}},
		{"CRLF and BOM", "\xef\xbb\xbf[a]\r\nx = 1\r\n",
			map[string]int{"a": 1, "a.x": 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keyLines(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("keyLines:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}
