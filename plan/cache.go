package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultCacheFiles is the number of files a Cache made with no bound
// keeps: more than the 13,000 ordinary plans DefaultLimits' total size lets
// through.
const DefaultCacheFiles = 20_000

// Cache keeps what checking each plan file on its own found (its plan, or
// its errors), by path and content, for Validator.ValidateCached: a
// daemon following a repository of thousands of plans parses again, at
// each new head, only the files that changed. It keeps one entry per
// path, the content last seen there, so a file changed back to an
// earlier content is parsed again; it forgets the paths a call no longer
// holds, and never holds more than its bound. It is safe for concurrent
// use, though calls that share it should validate the same tree (each
// forgets what the other holds).
//
// The plans it hands out are shared between calls: callers must not
// modify them (the daemon copies a plan before changing its target).
type Cache struct {
	mu      sync.Mutex
	max     int
	entries map[string]cacheEntry
	checks  atomic.Int64
}

type cacheEntry struct {
	key string
	checked
}

// NewCache returns a Cache of at most max files (DefaultCacheFiles when
// max <= 0).
func NewCache(max int) *Cache {
	if max <= 0 {
		max = DefaultCacheFiles
	}
	return &Cache{max: max, entries: map[string]cacheEntry{}}
}

// Len is the number of files the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Checks is the number of files checked (parsed) through the cache since
// it was made: those it did not hold.
func (c *Cache) Checks() int64 { return c.checks.Load() }

// cacheKey is what a source's outcome is kept under, besides its path: its
// content, by the reader's blob id or else by its SHA-256 sum, and whether
// it was discovered (which decides whether a file of another kind is
// skipped).
func cacheKey(src Source) string {
	var b strings.Builder
	if src.Discovered {
		b.WriteString("d:")
	}
	if src.Blob != "" {
		b.WriteString("blob:")
		b.WriteString(src.Blob)
		return b.String()
	}
	sum := sha256.Sum256(src.Data)
	b.WriteString("sha256:")
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}

// update keeps the outcome of the sources checked (by index, in checked),
// unless it depends on more than the content (a limit on CUE's time or
// memory, which a loaded machine can reach and an idle one not), and
// forgets the paths sources do not hold.
func (c *Cache) update(sources []Source, keys []string, checked []int, results []checked) {
	c.checks.Add(int64(len(checked)))
	c.mu.Lock()
	defer c.mu.Unlock()
	present := make(map[string]bool, len(sources))
	for _, src := range sources {
		present[src.Path] = true
	}
	for path := range c.entries {
		if !present[path] {
			delete(c.entries, path)
		}
	}
	for _, i := range checked {
		path := sources[i].Path
		if transient(results[i].errs) {
			delete(c.entries, path)
			continue
		}
		if _, ok := c.entries[path]; !ok && len(c.entries) >= c.max {
			continue
		}
		c.entries[path] = cacheEntry{key: keys[i], checked: results[i]}
	}
}

// transient reports whether errs hold an error that a limit on CUE's
// evaluation raised: the same file may pass on a machine less loaded.
func transient(errs Errors) bool {
	for _, e := range errs {
		if strings.HasSuffix(e.Message, "(limit: plans.cueTimeout)") || strings.HasSuffix(e.Message, "(limit: plans.cueMemory)") {
			return true
		}
	}
	return false
}
