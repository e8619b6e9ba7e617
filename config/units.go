package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes.
//
// In TOML it is either an integer (bytes) or a string: a non-negative
// decimal integer, optionally followed by one of the binary units B, KiB,
// MiB, GiB or TiB, with optional spaces in between ("1048576", "512B",
// "100MiB", "2 GiB"). Fractions ("1.5MiB") and decimal units (KB, MB, GB)
// are rejected on purpose: a limit that silently means 1000 or 1024, or
// rounds, is worse than an error.
type Size int64

var sizeUnits = []struct {
	name  string
	bytes int64
}{
	{"TiB", 1 << 40},
	{"GiB", 1 << 30},
	{"MiB", 1 << 20},
	{"KiB", 1 << 10},
	{"B", 1},
	{"", 1},
}

func parseSize(s string) (Size, error) {
	digits := len(s) - len(strings.TrimLeft(s, "0123456789"))
	if digits == 0 {
		return 0, fmt.Errorf("invalid size %q (use bytes or KiB, MiB, GiB, TiB)", s)
	}
	unit := strings.TrimLeft(s[digits:], " ")
	for _, u := range sizeUnits {
		if unit != u.name || (unit == "" && digits < len(s)) {
			continue
		}
		n, err := strconv.ParseInt(s[:digits], 10, 64)
		if err != nil || n > math.MaxInt64/u.bytes {
			return 0, fmt.Errorf("invalid size %q (too large)", s)
		}
		return Size(n * u.bytes), nil
	}
	return 0, fmt.Errorf("invalid size %q (use bytes or KiB, MiB, GiB, TiB)", s)
}

// String formats s in the largest binary unit that divides it exactly:
// "100MiB", "1KiB", "1000B", "0B".
func (s Size) String() string {
	for _, u := range sizeUnits {
		if s != 0 && int64(s)%u.bytes == 0 {
			return strconv.FormatInt(int64(s)/u.bytes, 10) + u.name
		}
	}
	return "0B"
}

// MarshalText implements encoding.TextMarshaler; see String.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler for the string form.
func (s *Size) UnmarshalText(text []byte) error {
	n, err := parseSize(string(text))
	if err != nil {
		return err
	}
	*s = n
	return nil
}

// UnmarshalTOML implements toml.Unmarshaler so that a TOML integer is taken
// as a number of bytes, and other TOML types get a clear error instead of
// being formatted as text first.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		return s.UnmarshalText([]byte(v))
	case int64:
		*s = Size(v) // Negative values are left for Validate to reject.
		return nil
	default:
		return fmt.Errorf("must be a size such as \"100MiB\" or an integer number of bytes, got %s", describe(v))
	}
}

// Duration is a time.Duration written in TOML as a string that
// time.ParseDuration accepts ("60s", "5m", "1h30m").
type Duration time.Duration

// String formats d like time.Duration.String without the zero trailing
// units: "60s" gives "1m", "24h" gives "24h", "90s" gives "1m30s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalText implements encoding.TextMarshaler; see String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler using time.ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a number and a unit: \"60s\", \"5m\", \"1h30m\")", text)
	}
	*d = Duration(v)
	return nil
}
