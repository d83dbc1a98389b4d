package gitops

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// TestPackStoreIndex feeds packStore packs written by git, with deltas by
// offset and by reference and long delta chains, and checks every object
// against git's own view of it.
func TestPackStoreIndex(t *testing.T) {
	needGit(t)
	work := t.TempDir()
	run(t, work, "init", "-q", "-b", "main")
	// Files that differ a little from each other, so that git makes
	// deltas of them (of blobs and of the trees that list them), and one
	// that does not compress.
	rng := rand.New(rand.NewPCG(1, 2))
	text := strings.Repeat("spec:\n  target: {phase: canary, percentage: 10}\n", 400)
	for i := range 60 {
		writeFile(t, filepath.Join(work, fmt.Sprintf("plans/p%02d/plan.yaml", i%7), fmt.Sprintf("f%02d.yaml", i)),
			text[:len(text)-i*13]+fmt.Sprintf("# %d\n", i))
	}
	noise := make([]byte, 300<<10)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	writeFile(t, filepath.Join(work, "data/noise.bin"), string(noise))
	writeFile(t, filepath.Join(work, "data/noise2.bin"), string(noise[:len(noise)-100])+"tail")
	run(t, work, "add", "-A")
	run(t, work, "commit", "-q", "-m", "one")
	writeFile(t, filepath.Join(work, "plans/p00/plan.yaml/f00.yaml"), text+"# changed\n")
	run(t, work, "commit", "-q", "-am", "two")

	objects := strings.Fields(run(t, work, "rev-list", "--objects", "HEAD"))
	var hashes []string
	for _, f := range objects {
		if len(f) == 40 {
			hashes = append(hashes, f)
		}
	}
	for name, args := range map[string][]string{
		"ofs-delta": {"--delta-base-offset"},
		"ref-delta": nil,
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command("git", append([]string{"-C", work, "pack-objects", "--stdout", "-q", "--window=50", "--depth=50"}, args...)...)
			cmd.Stdin = strings.NewReader(strings.Join(hashes, "\n") + "\n")
			packData, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			s := indexed(t, packData)
			deltas := 0
			for _, e := range s.pack.blobs {
				if e.base != nil {
					deltas++
				}
			}
			if deltas == 0 {
				t.Error("git made no delta of a blob: the test checks nothing of them")
			}
			inMemory := 0
			for _, h := range hashes {
				typ := run(t, work, "cat-file", "-t", h)
				want, err := exec.Command("git", "-C", work, "cat-file", typ, h).Output()
				if err != nil {
					t.Fatal(err)
				}
				obj, err := s.EncodedObject(plumbing.AnyObject, plumbing.NewHash(h))
				if err != nil {
					t.Errorf("%s %s: %v", typ, h, err)
					continue
				}
				if s.inMemory(obj.Hash()) {
					inMemory++
					if typ == "blob" {
						t.Errorf("blob %s is held in memory", h)
					}
				}
				size, err := s.EncodedObjectSize(obj.Hash())
				if obj.Type().String() != typ || obj.Size() != int64(len(want)) || err != nil || size != obj.Size() {
					t.Errorf("%s %s: %s of %d bytes (size %d, %v), want %d", typ, h, obj.Type(), obj.Size(), size, err, len(want))
				}
				r, err := obj.Reader()
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s %s: content differs (%v)", typ, h, err)
				}
			}
			t.Logf("%d objects, %d blob deltas, %d objects in memory, pack %s bytes", len(hashes), deltas, inMemory, strconv.Itoa(len(packData)))
		})
	}
}

// indexed is a packStore that took packData as a fetch's pack.
func indexed(t *testing.T, packData []byte) *packStore {
	t.Helper()
	s := newPackStore(spool{dir: t.TempDir(), max: 1 << 30})
	w, err := s.PackfileWriter()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(packData)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.release)
	return s
}

// TestPackStoreDeltaOutOfOrder reads, many times, blobs that git stores as
// chains of deltas copying from their bases out of order (each file the
// blocks of the others, rotated), as the status files of a fleet are
// stored. go-git's packfile.ReaderFromDelta, which reading such a blob went
// through, opens its base again for a copy out of order and never closes
// that reader: when the base is itself a delta, the goroutine that streams
// it blocks for good. Each read left goroutines behind, and a daemon grew
// by gigabytes a minute.
func TestPackStoreDeltaOutOfOrder(t *testing.T) {
	needGit(t)
	work := t.TempDir()
	run(t, work, "init", "-q", "-b", "main")
	rng := rand.New(rand.NewPCG(3, 4))
	blocks := make([]string, 8)
	for i := range blocks {
		var b strings.Builder
		for b.Len() < 4<<10 {
			fmt.Fprintf(&b, "plan-%d-%d: %d\n", i, b.Len(), rng.Uint64())
		}
		blocks[i] = b.String()
	}
	var hashes []string
	for v := range 12 {
		rotated := append(slices.Clone(blocks[v%len(blocks):]), blocks[:v%len(blocks)]...)
		name := fmt.Sprintf("status/p-%02d.yaml", v)
		writeFile(t, filepath.Join(work, name), strings.Join(rotated, "")+fmt.Sprintf("version: %d\n", v))
		run(t, work, "add", name)
		run(t, work, "commit", "-q", "-m", name)
		hashes = append(hashes, run(t, work, "rev-parse", "HEAD:"+name))
	}
	cmd := exec.Command("git", "-C", work, "pack-objects", "--stdout", "-q", "--delta-base-offset", "--window=20", "--depth=20")
	cmd.Stdin = strings.NewReader(strings.Join(hashes, "\n") + "\n")
	packData, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	s := indexed(t, packData)
	chained := 0
	for _, e := range s.pack.blobs {
		if e.base != nil && e.base.base != nil {
			chained++
		}
	}
	if chained == 0 {
		t.Fatal("git made no delta of a delta: the test checks nothing")
	}
	want := map[string][]byte{}
	for _, h := range hashes {
		if want[h], err = exec.Command("git", "-C", work, "cat-file", "blob", h).Output(); err != nil {
			t.Fatal(err)
		}
	}
	before := runtime.NumGoroutine()
	for range 20 {
		for _, h := range hashes {
			obj, err := s.EncodedObject(plumbing.BlobObject, plumbing.NewHash(h))
			if err != nil {
				t.Fatal(err)
			}
			r, err := obj.Reader()
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, want[h]) {
				t.Fatalf("blob %s: content differs (%v)", h, err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Errorf("%d reads of %d blobs (%d deltas of deltas) left %d goroutines behind", 20*len(hashes), len(hashes), chained, after-before)
	}
}

// TestPackStoreRefuses checks the limits of a fetched pack: its size, and
// that it is whole.
func TestPackStoreRefuses(t *testing.T) {
	needGit(t)
	dir := bare(t, t.TempDir(), "r.git", initialFiles)
	cmd := exec.Command("git", "-C", dir, "pack-objects", "--stdout", "-q", "--revs")
	cmd.Stdin = strings.NewReader("main\n")
	packData, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		data []byte
		max  int64
		want string
	}{
		"too large": {packData, 100, "larger than 100 bytes"},
		"truncated": {packData[:len(packData)-30], 1 << 20, ""},
		"corrupt":   {append(bytes.Clone(packData[:len(packData)-20]), make([]byte, 20)...), 1 << 20, "checksum"},
	} {
		s := newPackStore(spool{dir: t.TempDir(), max: tc.max})
		w, err := s.PackfileWriter()
		if err != nil {
			t.Fatal(err)
		}
		_, werr := io.Copy(w, bytes.NewReader(tc.data))
		cerr := w.Close()
		if werr == nil && cerr == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if msg := fmt.Sprint(werr, cerr); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %s, want %q", name, msg, tc.want)
		}
		if s.pack != nil {
			t.Errorf("%s: the store kept the pack", name)
		}
	}
}

func TestChunks(t *testing.T) {
	var c chunks
	want := make([]byte, 3*chunkSize+123)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for p := want; len(p) > 0; {
		k := min(len(p), 70_000)
		if n, err := c.Write(p[:k]); n != k || err != nil {
			t.Fatal(n, err)
		}
		p = p[k:]
	}
	got := make([]byte, len(want))
	if n, err := io.ReadFull(io.NewSectionReader(&c, 0, c.size), got); n != len(want) || err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, %v", n, err)
	}
	buf := make([]byte, 10)
	if n, err := c.ReadAt(buf, int64(chunkSize-5)); n != 10 || err != nil || !bytes.Equal(buf, want[chunkSize-5:chunkSize+5]) {
		t.Errorf("ReadAt across blocks: %d, %v", n, err)
	}
	if n, err := c.ReadAt(buf, c.size-3); n != 3 || err != io.EOF {
		t.Errorf("ReadAt at the end: %d, %v", n, err)
	}
}

// TestPackStoreInMemory fetches with no usable temporary directory: the
// pack is kept in memory, and reads the same.
func TestPackStoreInMemory(t *testing.T) {
	dir := bare(t, t.TempDir(), "r.git", initialFiles)
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	ctx := testContext(t, time.Minute)
	r, err := Open(ctx, Options{URL: "file://" + dir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := storeOf(r.cur.repo); st.pack == nil || st.pack.file != nil {
		t.Errorf("the pack is not held in memory")
	}
	if len(s.Files) != 2 || string(s.Files[0].Data) != initialFiles["plans/hal9.yaml"] {
		t.Errorf("Files = %v", paths(s.Files))
	}
	if _, err := Open(ctx, Options{URL: "file://" + dir, TempDir: filepath.Join(t.TempDir(), "missing")}); err != nil {
		t.Fatal(err) // Open fetches nothing
	}
	r2, _ := Open(ctx, Options{URL: "file://" + dir, TempDir: filepath.Join(t.TempDir(), "missing")})
	if _, err := r2.Sync(ctx); err == nil || !strings.Contains(err.Error(), "temporary file") {
		t.Errorf("Sync with a TempDir that does not exist: %v, want an error", err)
	}
}
