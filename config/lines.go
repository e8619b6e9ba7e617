package config

import (
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// keyLines returns the line on which each key in text is first defined,
// indexed by toml.Key.String(): table headers, keys (dotted or not) and keys
// inside inline tables, as toml.MetaData.Keys lists them.
//
// BurntSushi/toml records these positions but does not export them, so this
// skims the TOML grammar: just enough to step over strings, arrays, inline
// tables and comments without mistaking what is inside them for keys. The
// text has already been decoded without error; if the skimmer meets
// something it does not expect it stops, and later keys get no line.
func keyLines(text string) map[string]int {
	k := &skimmer{s: text, lines: map[string]int{}}
	for _, bom := range []string{"\xef\xbb\xbf", "\xff\xfe", "\xfe\xff"} {
		if strings.HasPrefix(text, bom) { // the decoder skips these too
			k.i = len(bom)
			break
		}
	}
	k.document()
	return k.lines
}

type skimmer struct {
	s     string
	i     int // next byte
	lines map[string]int

	// For lineAt, which is called with increasing positions.
	lastPos, lastLine int
}

func (k *skimmer) document() {
	var table toml.Key
	for {
		k.skipSpace(true)
		if k.i >= len(k.s) {
			return
		}
		start := k.i
		if k.consume("[") {
			array := k.consume("[")
			key, ok := k.key()
			if !ok || !k.consume("]") || (array && !k.consume("]")) {
				return
			}
			table = key
			k.record(key, start)
			k.skipLine()
			continue
		}
		key, ok := k.key()
		if !ok || !k.consume("=") {
			return
		}
		full := join(table, key)
		k.record(full, start)
		if !k.value(full) {
			return
		}
		k.skipLine()
	}
}

// key reads a possibly dotted key.
func (k *skimmer) key() (toml.Key, bool) {
	var key toml.Key
	for {
		k.skipSpace(false)
		var part string
		var ok bool
		switch k.peek() {
		case '"':
			part, ok = k.basicString()
		case '\'':
			part, ok = k.literalString()
		default:
			start := k.i
			for k.i < len(k.s) && isBareKeyByte(k.s[k.i]) {
				k.i++
			}
			part, ok = k.s[start:k.i], k.i > start
		}
		if !ok {
			return nil, false
		}
		key = append(key, part)
		if !k.consume(".") {
			return key, true
		}
	}
}

func isBareKeyByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '_' || c == '-' || c >= 0x80 // TOML 1.1 allows Unicode letters
}

// value steps over the value of key.
func (k *skimmer) value(key toml.Key) bool {
	k.skipSpace(false)
	rest := k.s[k.i:]
	switch {
	case strings.HasPrefix(rest, `"""`), strings.HasPrefix(rest, `'''`):
		return k.multilineString()
	case strings.HasPrefix(rest, `"`):
		_, ok := k.basicString()
		return ok
	case strings.HasPrefix(rest, `'`):
		_, ok := k.literalString()
		return ok
	case strings.HasPrefix(rest, "["):
		return k.array(key)
	case strings.HasPrefix(rest, "{"):
		return k.inlineTable(key)
	}
	return k.scalar()
}

// scalar steps over a number, boolean or datetime.
func (k *skimmer) scalar() bool {
	start := k.i
	for k.i < len(k.s) && !strings.ContainsRune(" \t\r\n,]}#", rune(k.s[k.i])) {
		k.i++
	}
	// A space may separate the date and time of a datetime.
	if isDate(k.s[start:k.i]) && k.i+1 < len(k.s) && k.s[k.i] == ' ' && '0' <= k.s[k.i+1] && k.s[k.i+1] <= '9' {
		k.i++
		return k.scalar()
	}
	return k.i > start
}

// isDate reports whether s looks like 2006-01-02.
func isDate(s string) bool {
	return len(s) == 10 && s[4] == '-' && s[7] == '-'
}

// array steps over an array; inline tables in it are tables under key.
func (k *skimmer) array(key toml.Key) bool {
	k.i++ // [
	for {
		k.skipSpace(true)
		if k.consume("]") {
			return true
		}
		if !k.value(key) {
			return false
		}
		k.skipSpace(true)
		if k.consume("]") {
			return true
		}
		if !k.consume(",") {
			return false
		}
	}
}

// inlineTable steps over an inline table, recording its keys under prefix.
func (k *skimmer) inlineTable(prefix toml.Key) bool {
	k.i++ // {
	for {
		k.skipSpace(true)
		if k.consume("}") {
			return true
		}
		start := k.i
		key, ok := k.key()
		if !ok || !k.consume("=") {
			return false
		}
		full := join(prefix, key)
		k.record(full, start)
		if !k.value(full) {
			return false
		}
		k.skipSpace(true)
		if k.consume("}") {
			return true
		}
		if !k.consume(",") {
			return false
		}
	}
}

// basicString reads a "string" and returns its value.
func (k *skimmer) basicString() (string, bool) {
	start := k.i
	for k.i++; k.i < len(k.s); k.i++ {
		switch k.s[k.i] {
		case '\\':
			k.i++
		case '\n':
			return "", false
		case '"':
			k.i++
			raw := k.s[start:k.i]
			if v, err := strconv.Unquote(goEscapes(raw)); err == nil {
				return v, true
			}
			// An escape neither Go nor TOML knows: keep it raw; at worst
			// the key is not found and has no line.
			return raw[1 : len(raw)-1], true
		}
	}
	return "", false
}

// goEscapes rewrites the escapes of a TOML basic string that Go's do not
// share into Go's, for strconv.Unquote: TOML 1.1's \e (escape) and \xHH,
// which is the character U+00HH in TOML and the byte 0xHH in Go.
func goEscapes(raw string) string {
	if !strings.Contains(raw, `\e`) && !strings.Contains(raw, `\x`) {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' && i+1 < len(raw) {
			switch raw[i+1] {
			case 'e':
				b.WriteString(`\x1b`)
			case 'x':
				b.WriteString(`\u00`)
			default:
				b.WriteString(raw[i : i+2])
			}
			i++
			continue
		}
		b.WriteByte(raw[i])
	}
	return b.String()
}

// literalString reads a 'string' and returns its value.
func (k *skimmer) literalString() (string, bool) {
	end := strings.IndexAny(k.s[k.i+1:], "'\n")
	if end < 0 || k.s[k.i+1+end] != '\'' {
		return "", false
	}
	v := k.s[k.i+1 : k.i+1+end]
	k.i += end + 2
	return v, true
}

// multilineString steps over a multi-line string, basic or literal.
func (k *skimmer) multilineString() bool {
	quote := k.s[k.i]
	k.i += 3
	for ; k.i < len(k.s); k.i++ {
		switch {
		case k.s[k.i] == '\\' && quote == '"':
			k.i++
		case strings.HasPrefix(k.s[k.i:], strings.Repeat(string(quote), 3)):
			k.i += 3
			// Up to two more quotes belong to the content.
			for n := 0; n < 2 && k.i < len(k.s) && k.s[k.i] == quote; n++ {
				k.i++
			}
			return true
		}
	}
	return false
}

// skipSpace skips spaces and tabs, and also newlines and comments if
// newlines is set.
func (k *skimmer) skipSpace(newlines bool) {
	for k.i < len(k.s) {
		switch k.s[k.i] {
		case ' ', '\t':
		case '\r', '\n':
			if !newlines {
				return
			}
		case '#':
			if !newlines {
				return
			}
			k.skipLine()
			continue
		default:
			return
		}
		k.i++
	}
}

// skipLine moves to the newline that ends the current line.
func (k *skimmer) skipLine() {
	if n := strings.IndexByte(k.s[k.i:], '\n'); n >= 0 {
		k.i += n
	} else {
		k.i = len(k.s)
	}
}

// consume skips spaces and then tok, if it is next.
func (k *skimmer) consume(tok string) bool {
	k.skipSpace(false)
	if strings.HasPrefix(k.s[k.i:], tok) {
		k.i += len(tok)
		return true
	}
	return false
}

func (k *skimmer) peek() byte {
	if k.i < len(k.s) {
		return k.s[k.i]
	}
	return 0
}

// record notes that key starts at byte pos, unless it was seen before.
func (k *skimmer) record(key toml.Key, pos int) {
	s := key.String()
	if _, ok := k.lines[s]; !ok {
		k.lines[s] = k.lineAt(pos)
	}
}

func (k *skimmer) lineAt(pos int) int {
	if k.lastLine == 0 {
		k.lastLine = 1
	}
	k.lastLine += strings.Count(k.s[k.lastPos:pos], "\n")
	k.lastPos = pos
	return k.lastLine
}

func join(a, b toml.Key) toml.Key {
	return append(append(make(toml.Key, 0, len(a)+len(b)), a...), b...)
}
