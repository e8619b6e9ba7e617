package upstream

import (
	"strings"
	"testing"
)

func TestRestore(t *testing.T) {
	tests := []struct {
		name     string
		ours     string
		replaced map[string]string
		want     string
		err      string // a piece of the error, if one is expected
	}{
		{name: "no blocks", ours: "a\nb\n", want: "a\nb\n"},
		{
			name:     "one block",
			ours:     "a\n\t// clamfuse: begin x\n\tnew\n\t// clamfuse: end x\nb\n",
			replaced: map[string]string{"x": "\told\n"},
			want:     "a\n\told\nb\n",
		},
		{
			name:     "an addition",
			ours:     "a\n// clamfuse: begin add more\nc\n// clamfuse: end add more\nb\n",
			replaced: map[string]string{"add more": ""},
			want:     "a\nb\n",
		},
		{
			name:     "an addition owns the blank line before it",
			ours:     "a\n\n// clamfuse: begin x\n\nc\n\n// clamfuse: end x\n\nb\n",
			replaced: map[string]string{"x": ""},
			want:     "a\n\nb\n",
		},
		{
			name:     "a replacement does not",
			ours:     "a\n\n// clamfuse: begin x\nc\n// clamfuse: end x\nb\n",
			replaced: map[string]string{"x": "d\n"},
			want:     "a\n\nd\nb\n",
		},
		{
			name:     "two blocks",
			ours:     "// clamfuse: begin x\n1\n// clamfuse: end x\nm\n// clamfuse: begin y\n2\n// clamfuse: end y\n",
			replaced: map[string]string{"x": "one\n", "y": "two\n"},
			want:     "one\nm\ntwo\n",
		},
		{name: "not recorded", ours: "// clamfuse: begin x\n// clamfuse: end x\n", err: "not recorded"},
		{name: "never ends", ours: "// clamfuse: begin x\n", replaced: map[string]string{"x": ""}, err: "never ends"},
		{
			name:     "nested",
			ours:     "// clamfuse: begin x\n// clamfuse: begin y\n",
			replaced: map[string]string{"x": "", "y": ""},
			err:      "inside",
		},
		{
			name:     "twice",
			ours:     "// clamfuse: begin x\n// clamfuse: end x\n// clamfuse: begin x\n// clamfuse: end x\n",
			replaced: map[string]string{"x": ""},
			err:      "twice",
		},
		{name: "wrong end", ours: "// clamfuse: begin x\n// clamfuse: end y\n", replaced: map[string]string{"x": ""}, err: "open block"},
		{name: "missing block", ours: "a\n", replaced: map[string]string{"x": ""}, err: "not in the file"},
		{name: "other clamfuse comments are text", ours: "// clamfuse: this is a copy\n", want: "// clamfuse: this is a copy\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Restore(tt.ours, tt.replaced)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Restore: error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Restore = %q, want %q", got, tt.want)
			}
		})
	}
}
