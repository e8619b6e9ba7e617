package config

import (
	"fmt"
	"strings"
)

// Addresses is clamd.address: one clamd address or several. In TOML it is
// a string ("unix:/run/clamav/clamd.ctl") or a non-empty array of strings
// (["tcp://10.0.0.1:3310", "tcp://10.0.0.2:3310"]); Encode writes a single
// address back as a string, so files in the single-string form keep it.
type Addresses []string

// String joins the addresses with ", ", for messages.
func (a Addresses) String() string { return strings.Join(a, ", ") }

// UnmarshalTOML implements toml.Unmarshaler for both forms.
func (a *Addresses) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*a = Addresses{v}
		return nil
	case []any:
		out := make(Addresses, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("must be a string or an array of strings, got %s at index %d", describe(e), i)
			}
			out = append(out, s)
		}
		*a = out
		return nil
	default:
		return fmt.Errorf("must be a string or an array of strings, got %s", describe(v))
	}
}

// MarshalTOML implements toml.Marshaler: a string for one address, an
// array for several.
func (a Addresses) MarshalTOML() ([]byte, error) {
	if len(a) == 1 {
		return []byte(tomlQuote(a[0])), nil
	}
	q := make([]string, len(a))
	for i, s := range a {
		q[i] = tomlQuote(s)
	}
	return []byte("[" + strings.Join(q, ", ") + "]"), nil
}

// tomlQuote writes s as a TOML basic string.
func tomlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
