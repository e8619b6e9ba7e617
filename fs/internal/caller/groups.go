package caller

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Cache finds the credentials of a FUSE request's caller. The request
// header carries the caller's fsuid, fsgid and thread id but not its
// supplementary groups; those are read from /proc/PID/status and kept for
// a short while, keyed by (pid, uid, gid), so that a pid reused by a
// process with other ids does not find them.
//
// Residual risk, within the cache's lifetime (a second by default): a
// process that drops a supplementary group keeps that group's access
// through the mount until its entry expires, and so does a new process
// that reuses the pid with the same uid and gid. Both need the pid to be
// reused or the group to be dropped within that second.
type Cache struct {
	ttl time.Duration
	now func() time.Time // time.Now; tests replace it

	mu sync.Mutex         // guards m
	m  map[cacheKey]entry // by caller
}

type cacheKey struct{ pid, uid, gid uint32 }

type entry struct {
	groups  []uint32
	expires time.Time
}

// maxEntries bounds the cache: past it, expired entries go, and if that
// is not enough, all of them.
const maxEntries = 4096

// NewCache returns a cache that keeps each caller's groups for ttl.
func NewCache(ttl time.Duration) *Cache {
	return &Cache{ttl: ttl, now: time.Now, m: map[cacheKey]entry{}}
}

// Cred returns the credentials of the caller with thread id pid, fsuid
// uid and fsgid gid (the FUSE request header). Its supplementary groups
// are those /proc/PID/status lists if that status still shows the same
// fsuid and fsgid; none for pid 0 (a request the kernel makes itself),
// for a process gone or with other ids now, or when clamfuse cannot
// switch credentials anyway. Fewer groups can only mean less access.
func (c *Cache) Cred(pid, uid, gid uint32) Cred {
	cr := Cred{Uid: uid, Gid: gid}
	if pid == 0 || uid == 0 {
		// Root's capabilities decide for it, not its groups.
		return cr
	}
	if ok, _ := Switching(); !ok {
		return cr
	}
	k := cacheKey{pid, uid, gid}
	now := c.now()
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		cr.Groups = e.groups
		return cr
	}
	groups := readGroups(pid, uid, gid)
	c.mu.Lock()
	if len(c.m) >= maxEntries {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxEntries {
			clear(c.m)
		}
	}
	c.m[k] = entry{groups: groups, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	cr.Groups = groups
	return cr
}

// readGroups reads the supplementary groups of pid from /proc, if its
// fsuid and fsgid are uid and gid.
func readGroups(pid, uid, gid uint32) []uint32 {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return nil
	}
	groups, ok := parseStatus(b, uid, gid)
	if !ok {
		return nil
	}
	return groups
}

// parseStatus returns the Groups: line of a /proc/PID/status, and whether
// its Uid: and Gid: lines give uid and gid as the filesystem ids (their
// fourth field) and the Groups: line was read whole.
func parseStatus(b []byte, uid, gid uint32) ([]uint32, bool) {
	var groups []uint32
	sawUid, sawGid, sawGroups := false, false, false
	for line := range bytes.Lines(b) {
		name, rest, ok := bytes.Cut(bytes.TrimRight(line, "\n"), []byte(":"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest)
		switch string(name) {
		case "Uid", "Gid":
			if len(fields) != 4 {
				return nil, false
			}
			fs, err := strconv.ParseUint(string(fields[3]), 10, 32)
			want := uid
			if string(name) == "Gid" {
				want = gid
			}
			if err != nil || uint32(fs) != want {
				return nil, false
			}
			if string(name) == "Uid" {
				sawUid = true
			} else {
				sawGid = true
			}
		case "Groups":
			groups = make([]uint32, 0, len(fields))
			for _, f := range fields {
				g, err := strconv.ParseUint(string(f), 10, 32)
				if err != nil {
					return nil, false
				}
				groups = append(groups, uint32(g))
			}
			sawGroups = true
		}
	}
	if !sawUid || !sawGid || !sawGroups {
		return nil, false
	}
	slices.Sort(groups)
	return slices.Compact(groups), true
}
