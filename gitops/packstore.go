package gitops

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
)

// packStore is the storage of a clone: go-git's memory storage for commits,
// trees and tags and for every object Commit writes, and the pack a fetch
// brought for the blobs it fetched, which stay in that pack, compressed, on
// disk, and are inflated only when read. The memory a clone costs is that
// of the repository's structure (its commits and trees), not of its files:
// a large file next to the plans costs its size on disk, for as long as the
// clone lives, and no memory unless something reads it.
//
// go-git's own fetch into memory storage holds every object inflated, and
// its pack parser, also the one of its filesystem storage, inflates every
// object whole into a buffer at least once: a 150 MB file peaked at 580 MB.
// packStore takes the pack as go-git receives it (storer.PackfileWriter),
// writes it to disk and indexes it itself, streaming: each blob is hashed as
// it is inflated, and a delta is applied to its base as a stream
// (packfile.ReaderFromDelta), so indexing holds no blob whole in memory.
// Reading a blob that is a delta makes it in memory (see pack.open); the
// caller bounds what it reads by the blob's size first.
type packStore struct {
	*memory.Storage
	spool spool
	// pack is the pack the fetch brought; nil before it. It is set once,
	// by the fetch, which returns after: readers need no lock. mu orders
	// setting it with release, which an abandoned fetch may race.
	pack     *pack
	mu       sync.Mutex
	released bool
}

// spool says where a fetched pack is written.
type spool struct {
	// dir is the directory of the temporary file the pack is written to;
	// os.TempDir() when empty.
	dir string
	// inMemory allows keeping the pack in memory when no file can be
	// made in dir (the default dir only: a FROM scratch image has no
	// /tmp).
	inMemory bool
	// max is the largest pack accepted.
	max int64
}

func newPackStore(sp spool) *packStore {
	return &packStore{Storage: memory.NewStorage(), spool: sp}
}

var _ storer.PackfileWriter = (*packStore)(nil)

// PackfileWriter receives the pack of a fetch, and indexes it when closed.
func (s *packStore) PackfileWriter() (io.WriteCloser, error) {
	if s.pack != nil {
		return nil, errors.New("a clone takes one pack")
	}
	f, err := os.CreateTemp(s.spool.dir, "hal9-migrate-pack-*")
	if err != nil && !s.spool.inMemory {
		return nil, fmt.Errorf("write the pack to a temporary file: %w", err)
	}
	w := &packWriter{s: s, max: s.spool.max}
	if err != nil {
		w.mem = &chunks{}
		return w, nil
	}
	// Unlinked at once: the file lives as long as its descriptor, so a
	// crash leaves nothing behind. Where an open file cannot be removed,
	// it is removed when closed.
	w.file = f
	if os.Remove(f.Name()) != nil {
		w.path = f.Name()
	}
	return w, nil
}

// packWriter writes a fetched pack to a file (or a buffer) and indexes it
// on Close.
type packWriter struct {
	s    *packStore
	file *os.File
	path string // the file's name, when it could not be removed at once
	mem  *chunks
	max  int64
	n    int64
	err  error
}

func (w *packWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.n+int64(len(p)) > w.max {
		w.err = fmt.Errorf("the pack is larger than %d bytes (Options.MaxPackBytes)", w.max)
		return 0, w.err
	}
	var n int
	if w.file != nil {
		n, w.err = w.file.Write(p)
	} else {
		n, w.err = w.mem.Write(p)
	}
	w.n += int64(n)
	return n, w.err
}

func (w *packWriter) Close() error {
	p := &pack{size: w.n, path: w.path}
	if w.file != nil {
		p.data, p.file = w.file, w.file
	} else {
		p.data = w.mem
	}
	if w.err != nil {
		p.close()
		return w.err
	}
	if err := p.index(w.s.Storage); err != nil {
		p.close()
		return fmt.Errorf("index the fetched pack: %w", err)
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.released {
		p.close() // the fetch was abandoned, and its store released
		return errors.New("the store was released")
	}
	w.s.pack = p
	return nil
}

// chunks holds a pack in memory in blocks of chunkSize: unlike a
// bytes.Buffer, which doubles and copies as it grows (a 150 MB pack peaked
// at 550 MB), it costs the pack's size.
type chunks struct {
	blocks [][]byte
	size   int64
}

const chunkSize = 1 << 20

func (c *chunks) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		last := len(c.blocks) - 1
		if last < 0 || len(c.blocks[last]) == chunkSize {
			c.blocks = append(c.blocks, make([]byte, 0, chunkSize))
			last++
		}
		k := min(len(p), chunkSize-len(c.blocks[last]))
		c.blocks[last] = append(c.blocks[last], p[:k]...)
		p = p[k:]
	}
	c.size += int64(n)
	return n, nil
}

func (c *chunks) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(p) && off < c.size {
		b := c.blocks[off/chunkSize][off%chunkSize:]
		k := copy(p[n:], b)
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// EncodedObject returns the object from memory, or a blob from the pack.
func (s *packStore) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	obj, err := s.Storage.EncodedObject(t, h)
	if !errors.Is(err, plumbing.ErrObjectNotFound) || s.pack == nil || (t != plumbing.AnyObject && t != plumbing.BlobObject) {
		return obj, err
	}
	e, ok := s.pack.blobs[h]
	if !ok {
		return nil, plumbing.ErrObjectNotFound
	}
	return &packedBlob{pack: s.pack, e: e}, nil
}

func (s *packStore) HasEncodedObject(h plumbing.Hash) error {
	if err := s.Storage.HasEncodedObject(h); !errors.Is(err, plumbing.ErrObjectNotFound) {
		return err
	}
	if s.pack != nil && s.pack.blobs[h] != nil {
		return nil
	}
	return plumbing.ErrObjectNotFound
}

func (s *packStore) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	size, err := s.Storage.EncodedObjectSize(h)
	if !errors.Is(err, plumbing.ErrObjectNotFound) {
		return size, err
	}
	if s.pack != nil {
		if e, ok := s.pack.blobs[h]; ok {
			return e.size, nil
		}
	}
	return 0, plumbing.ErrObjectNotFound
}

func (s *packStore) IterEncodedObjects(t plumbing.ObjectType) (storer.EncodedObjectIter, error) {
	it, err := s.Storage.IterEncodedObjects(t)
	if err != nil || s.pack == nil || (t != plumbing.AnyObject && t != plumbing.BlobObject) {
		return it, err
	}
	var objs []plumbing.EncodedObject
	if err := it.ForEach(func(o plumbing.EncodedObject) error { objs = append(objs, o); return nil }); err != nil {
		return nil, err
	}
	for _, e := range s.pack.blobs {
		if _, err := s.Storage.EncodedObject(plumbing.BlobObject, e.hash); errors.Is(err, plumbing.ErrObjectNotFound) {
			objs = append(objs, &packedBlob{pack: s.pack, e: e})
		}
	}
	return storer.NewEncodedObjectSliceIter(objs), nil
}

// inMemory reports whether the object h is held in memory (rather than in
// the pack, or nowhere).
func (s *packStore) inMemory(h plumbing.Hash) bool {
	return s.Storage.HasEncodedObject(h) == nil
}

// release closes the pack's file (and removes it, where it could not be
// removed at once): after it, the blobs that were in the pack cannot be
// read. Only for a store nothing reads any more.
func (s *packStore) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = true
	if s.pack != nil {
		s.pack.close()
	}
}

// pack is a pack file on disk (or in memory), and where its blobs are.
type pack struct {
	data  io.ReaderAt
	size  int64
	file  *os.File // when on disk
	path  string   // when the file is still linked
	blobs map[plumbing.Hash]*packedEntry

	closeOnce sync.Once
}

func (p *pack) close() {
	p.closeOnce.Do(func() {
		if p.file != nil {
			_ = p.file.Close()
		}
		if p.path != "" {
			_ = os.Remove(p.path)
		}
	})
}

// packedEntry is one object of the pack: a blob, or, while the pack is
// indexed, a delta not resolved yet.
type packedEntry struct {
	offset int64 // of the object's header in the pack
	typ    plumbing.ObjectType
	size   int64 // inflated; for a delta, of the object it makes
	hash   plumbing.Hash
	// base is the blob a delta applies to; nil for a whole object.
	base *packedEntry
}

// open returns e's content.
//
// A delta is resolved here, in memory, rather than through go-git's
// packfile.ReaderFromDelta: that one streams through a goroutine per link
// of the chain and, when a delta copies from its base out of order, opens
// the base again without ever closing the new reader, so the goroutine
// behind it blocks for good with its inflater (about 100 KB). A daemon
// reading the status files of a fleet, which Git stores as deltas of one
// another, leaked gigabytes within a minute of pushes. Blobs read here
// are bounded by the caller (readBlob checks the size first), and a
// delta may be no larger than a delta of its target can be.
func (p *pack) open(e *packedEntry) (io.ReadCloser, error) {
	if e.base == nil {
		return p.raw(e.offset)
	}
	b, err := p.patched(e)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// patched returns the content of the delta entry e, its base resolved
// first.
func (p *pack) patched(e *packedEntry) ([]byte, error) {
	base, err := p.content(e.base)
	if err != nil {
		return nil, err
	}
	r, err := p.raw(e.offset)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// Each delta command writes at least one byte of the target and takes
	// at most 8 bytes: a delta longer than that is not one of this target.
	limit := 8*e.size + 64
	delta, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: read its delta: %w", e.hash, err)
	}
	if int64(len(delta)) > limit {
		return nil, fmt.Errorf("blob %s: its delta is longer than a delta of %d bytes can be", e.hash, e.size)
	}
	out, err := packfile.PatchDelta(base, delta)
	if err != nil {
		return nil, fmt.Errorf("blob %s: apply its delta: %w", e.hash, err)
	}
	if int64(len(out)) != e.size {
		return nil, fmt.Errorf("blob %s: %d bytes after its delta, the pack says %d", e.hash, len(out), e.size)
	}
	return out, nil
}

// content returns the whole content of the entry e, at most its size.
func (p *pack) content(e *packedEntry) ([]byte, error) {
	if e.base != nil {
		return p.patched(e)
	}
	r, err := p.raw(e.offset)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, e.size))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", e.hash, err)
	}
	return b, nil
}

// raw returns the inflated data of the object at offset: its content, or
// for a delta the delta.
func (p *pack) raw(offset int64) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(p.data, offset, p.size-offset), 16<<10)
	first, err := br.ReadByte()
	if err != nil {
		return nil, err
	}
	for c := first; c&0x80 != 0; { // the size, which the index knows
		if c, err = br.ReadByte(); err != nil {
			return nil, err
		}
	}
	var c byte
	switch plumbing.ObjectType((first >> 4) & 7) {
	case plumbing.OFSDeltaObject:
		for {
			if c, err = br.ReadByte(); err != nil || c&0x80 == 0 {
				break
			}
		}
	case plumbing.REFDeltaObject:
		_, err = br.Discard(20)
	}
	if err != nil {
		return nil, err
	}
	return zlib.NewReader(br)
}

// packedBlob is a blob of the pack, as go-git reads objects.
type packedBlob struct {
	pack *pack
	e    *packedEntry
}

func (b *packedBlob) Hash() plumbing.Hash            { return b.e.hash }
func (b *packedBlob) Type() plumbing.ObjectType      { return plumbing.BlobObject }
func (b *packedBlob) SetType(plumbing.ObjectType)    {}
func (b *packedBlob) Size() int64                    { return b.e.size }
func (b *packedBlob) SetSize(int64)                  {}
func (b *packedBlob) Reader() (io.ReadCloser, error) { return b.pack.open(b.e) }
func (b *packedBlob) Writer() (io.WriteCloser, error) {
	return nil, errors.New("a fetched blob is read-only")
}
func (b *packedBlob) String() string { return "blob " + b.e.hash.String() }

var _ plumbing.EncodedObject = (*packedBlob)(nil)

// index reads the pack once from start to end, keeping commits, trees and
// tags in mem and the place, size and hash of every blob, then resolves the
// deltas. Nothing it holds grows with the size of a blob.
func (p *pack) index(mem *memory.Storage) error {
	sc := packfile.NewScanner(io.NewSectionReader(p.data, 0, p.size))
	_, count, err := sc.Header()
	if err != nil {
		return err
	}
	type delta struct {
		offset     int64
		baseOffset int64         // an OFS delta's base
		baseHash   plumbing.Hash // a REF delta's base
	}
	byOffset := map[int64]*packedEntry{}
	var deltas []delta
	p.blobs = map[plumbing.Hash]*packedEntry{}
	for range count {
		h, err := sc.NextObjectHeader()
		if err != nil {
			return err
		}
		switch h.Type {
		case plumbing.CommitObject, plumbing.TreeObject, plumbing.TagObject:
			obj := mem.NewEncodedObject()
			obj.SetType(h.Type)
			obj.SetSize(h.Length)
			w, _ := obj.Writer()
			if _, _, err := sc.NextObject(w); err != nil {
				return err
			}
			hash, err := mem.SetEncodedObject(obj)
			if err != nil {
				return err
			}
			byOffset[h.Offset] = &packedEntry{offset: h.Offset, typ: h.Type, size: h.Length, hash: hash}
		case plumbing.BlobObject:
			hasher := plumbing.NewHasher(plumbing.BlobObject, h.Length)
			if _, _, err := sc.NextObject(hasher); err != nil {
				return err
			}
			e := &packedEntry{offset: h.Offset, typ: h.Type, size: h.Length, hash: hasher.Sum()}
			byOffset[h.Offset] = e
			p.blobs[e.hash] = e
		case plumbing.OFSDeltaObject, plumbing.REFDeltaObject:
			deltas = append(deltas, delta{offset: h.Offset, baseOffset: h.OffsetReference, baseHash: h.Reference})
			// The scanner skips the data at the next header.
		default:
			return fmt.Errorf("object of type %v at offset %d", h.Type, h.Offset)
		}
	}
	if _, err := sc.Checksum(); err != nil {
		return err
	}

	// A delta may build on another delta, which then must be resolved
	// first: in a pack written by git a delta's base comes before it, so
	// one round resolves most of them.
	for len(deltas) > 0 {
		var left []delta
		for _, d := range deltas {
			var base *packedEntry
			if d.baseHash.IsZero() {
				base = byOffset[d.baseOffset]
			} else if base = p.blobs[d.baseHash]; base == nil {
				if obj, err := mem.EncodedObject(plumbing.AnyObject, d.baseHash); err == nil {
					base = &packedEntry{typ: obj.Type(), size: obj.Size(), hash: d.baseHash}
				}
			}
			if base == nil {
				left = append(left, d)
				continue
			}
			e, err := p.resolve(mem, d.offset, base)
			if err != nil {
				return fmt.Errorf("resolve the delta at offset %d: %w", d.offset, err)
			}
			byOffset[d.offset] = e
		}
		if len(left) == len(deltas) {
			return fmt.Errorf("%d deltas have no base in the pack", len(left))
		}
		deltas = left
	}
	return nil
}

// resolve makes the object of the delta at offset over base. A blob is
// hashed as the delta streams it; any other object is built in memory and
// stored in mem.
func (p *pack) resolve(mem *memory.Storage, offset int64, base *packedEntry) (*packedEntry, error) {
	raw, err := p.raw(offset)
	if err != nil {
		return nil, err
	}
	if base.typ != plumbing.BlobObject {
		defer raw.Close()
		baseObj, err := mem.EncodedObject(base.typ, base.hash)
		if err != nil {
			return nil, err
		}
		d, err := io.ReadAll(raw)
		if err != nil {
			return nil, err
		}
		obj := mem.NewEncodedObject()
		obj.SetType(base.typ)
		if err := packfile.ApplyDelta(obj, baseObj, d); err != nil {
			return nil, err
		}
		hash, err := mem.SetEncodedObject(obj)
		if err != nil {
			return nil, err
		}
		return &packedEntry{offset: offset, typ: base.typ, size: obj.Size(), hash: hash}, nil
	}
	// The delta starts with the sizes of its base and of its result.
	// raw is not closed: ReaderFromDelta reads it in a goroutine of its
	// own until it has made the whole blob, and closing a zlib reader
	// releases nothing.
	br := bufio.NewReader(raw)
	head, _ := br.Peek(20)
	_, n := uvarint(head)
	size, m := uvarint(head[n:])
	if n == 0 || m == 0 {
		return nil, errors.New("the delta has no sizes")
	}
	e := &packedEntry{offset: offset, typ: plumbing.BlobObject, size: int64(size), base: base}
	content, err := packfile.ReaderFromDelta(&packedBlob{pack: p, e: base}, br)
	if err != nil {
		return nil, err
	}
	defer content.Close()
	hasher := plumbing.NewHasher(plumbing.BlobObject, e.size)
	if _, err := io.Copy(hasher, content); err != nil {
		return nil, err
	}
	e.hash = hasher.Sum()
	p.blobs[e.hash] = e
	return e, nil
}

// uvarint decodes the little-endian base-128 number delta headers start
// with; n is 0 when b holds none.
func uvarint(b []byte) (v uint64, n int) {
	for i, c := range b {
		if i == 10 {
			return 0, 0
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}
