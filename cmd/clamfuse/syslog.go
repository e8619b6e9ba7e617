package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"log/syslog"
	"strings"
	"sync"

	"github.com/clamfuse/clamfuse/config"
)

// newSyslogLogger returns a logger that sends each record to syslog (the
// journal, on systemd machines) as "clamfuse", at the priority of its
// level, formatted as [log] says, without the time (syslog adds it).
// It is the logger of the detached mount process, which has no stderr.
func newSyslogLogger(c config.Log) (*slog.Logger, error) {
	w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "clamfuse")
	if err != nil {
		return nil, fmt.Errorf("cannot log to syslog: %v", err)
	}
	return slog.New(newSyslogHandler(w, c)), nil
}

// priorityWriter is the part of *syslog.Writer the handler uses.
type priorityWriter interface {
	Err(string) error
	Warning(string) error
	Info(string) error
	Debug(string) error
}

// syslogHandler formats a record with a text or JSON handler into a
// buffer, then writes it at the record's priority.
type syslogHandler struct {
	w     priorityWriter
	mu    *sync.Mutex   // shared by the handlers derived with WithAttrs and WithGroup; guards buf
	buf   *bytes.Buffer // where inner writes
	inner slog.Handler
}

func newSyslogHandler(w priorityWriter, c config.Log) *syslogHandler {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}
	h := &syslogHandler{w: w, mu: new(sync.Mutex), buf: new(bytes.Buffer)}
	if c.Format == "json" {
		h.inner = slog.NewJSONHandler(h.buf, opts)
	} else {
		h.inner = slog.NewTextHandler(h.buf, opts)
	}
	return h
}

func (h *syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	msg := strings.TrimSuffix(h.buf.String(), "\n")
	switch {
	case r.Level >= slog.LevelError:
		return h.w.Err(msg)
	case r.Level >= slog.LevelWarn:
		return h.w.Warning(msg)
	case r.Level >= slog.LevelInfo:
		return h.w.Info(msg)
	default:
		return h.w.Debug(msg)
	}
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &syslogHandler{w: h.w, mu: h.mu, buf: h.buf, inner: h.inner.WithAttrs(as)}
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	return &syslogHandler{w: h.w, mu: h.mu, buf: h.buf, inner: h.inner.WithGroup(name)}
}
