package main

import "testing"

func TestConfigFlags(t *testing.T) {
	for _, tc := range []struct {
		passthrough, readdirPlus string
		want                     string
	}{
		{"auto", "", ""},
		{"off", "", `, mount.passthrough "off"`},
		{"auto", "off", `, mount.readdirplus "off"`},
		{"off", "on", `, mount.passthrough "off", mount.readdirplus "on"`},
	} {
		b := &bench{opts: options{passthrough: tc.passthrough, readdirPlus: tc.readdirPlus}}
		if got := b.configFlags(); got != tc.want {
			t.Errorf("passthrough %q, readdirplus %q: %q, want %q", tc.passthrough, tc.readdirPlus, got, tc.want)
		}
	}
}
