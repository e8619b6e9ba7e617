package main

import (
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/clamfuse/clamfuse/config"
)

// fakeSyslog records "priority: message" lines.
type fakeSyslog struct {
	mu    sync.Mutex
	lines []string
}

func (f *fakeSyslog) add(p, m string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, p+": "+m)
	return nil
}

func (f *fakeSyslog) Err(m string) error     { return f.add("err", m) }
func (f *fakeSyslog) Warning(m string) error { return f.add("warning", m) }
func (f *fakeSyslog) Info(m string) error    { return f.add("info", m) }
func (f *fakeSyslog) Debug(m string) error   { return f.add("debug", m) }

func TestSyslogHandler(t *testing.T) {
	var w fakeSyslog
	log := slog.New(newSyslogHandler(&w, config.Log{Level: "info", Format: "text"}))
	log.Debug("hidden")
	log.Info("mounted", "target", "/mnt/in")
	log.With("target", "/mnt/in").WithGroup("scan").Warn("infected", "sig", "Eicar")
	log.Error("serving failed")
	want := []string{
		`info: level=INFO msg=mounted target=/mnt/in`,
		`warning: level=WARN msg=infected target=/mnt/in scan.sig=Eicar`,
		`err: level=ERROR msg="serving failed"`,
	}
	if strings.Join(w.lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("syslog got\n%s\nwant\n%s", strings.Join(w.lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestSyslogHandlerJSONConcurrent(t *testing.T) {
	var w fakeSyslog
	log := slog.New(newSyslogHandler(&w, config.Log{Level: "debug", Format: "json"}))
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.With("worker", i).Debug("tick")
		}()
	}
	wg.Wait()
	if len(w.lines) != 20 {
		t.Fatalf("got %d lines; want 20", len(w.lines))
	}
	for _, l := range w.lines {
		if !strings.HasPrefix(l, `debug: {"level":"DEBUG","msg":"tick","worker":`) || strings.Contains(l, "time") {
			t.Errorf("line %q: want one JSON record at debug, without time", l)
		}
	}
}
