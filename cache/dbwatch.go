package cache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// watchPolled, when set (by this package's tests only), is called after
// each look WatchDir takes, once onChange has returned.
var watchPolled atomic.Pointer[func()]

// WatchDir polls the directory dir every interval until ctx is done and
// calls onChange, from its own goroutine, whenever what it lists differs
// from the previous look: the names, sizes and modification times of its
// entries (not recursively). It is how clamfuse learns that clamd's
// signature database directory (freshclam's output, or signatures added
// by hand) has changed, which clamd's VERSION does not show for
// unofficial signatures.
//
// Polling rather than inotify: it works on any filesystem, survives the
// directory being replaced or missing for a while (that is a change too),
// and costs one readdir and a few lstats per interval. WatchDir returns
// at once; the first look is taken before it does.
func WatchDir(ctx context.Context, dir string, interval time.Duration, log *slog.Logger, onChange func()) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prev, err := dirState(dir)
	if err != nil {
		log.Warn("cannot read the clamd database directory; watching it anyway", "dir", dir, "err", err)
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		failing := err != nil
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now, err := dirState(dir)
			switch {
			case err != nil && !failing:
				log.Warn("cannot read the clamd database directory", "dir", dir, "err", err)
			case err == nil && failing:
				log.Info("clamd database directory readable again", "dir", dir)
			}
			failing = err != nil
			if now != prev {
				prev = now
				onChange()
			}
			if h := watchPolled.Load(); h != nil {
				(*h)()
			}
		}
	}()
}

// dirState fingerprints the entries of dir. An unreadable directory has
// a state of its own, derived from the error.
func dirState(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "error: " + err.Error(), err
	}
	lines := make([]string, 0, len(entries))
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			// Removed between the listing and the lstat: the next look
			// sees it gone.
			lines = append(lines, e.Name()+"\x00gone")
			continue
		}
		lines = append(lines, fmt.Sprintf("%s\x00%d\x00%d\x00%v", e.Name(), info.Size(), info.ModTime().UnixNano(), info.Mode()))
	}
	slices.Sort(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}
