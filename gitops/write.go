package gitops

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// readFile returns the content of the slash-separated path p in tree, whose
// objects are in st; an error wrapping ErrTooLarge when the file is larger
// than max bytes.
func readFile(st storer.EncodedObjectStorer, tree *object.Tree, p string, max int64) ([]byte, error) {
	clean, err := cleanPath(p)
	if err != nil {
		return nil, err
	}
	_, entry, err := find(tree, clean)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if entry == nil {
		return nil, fmt.Errorf("read %s: %w", p, fs.ErrNotExist)
	}
	if entry.Mode != filemode.Regular && entry.Mode != filemode.Executable {
		return nil, fmt.Errorf("read %s: not a regular file", p)
	}
	data, _, err := readBlob(st, entry.Hash, max)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return data, nil
}

// cleanPath checks that p is a relative, slash-separated path of a file
// inside the repository, outside .git, and returns it cleaned.
func cleanPath(p string) (string, error) {
	clean := path.Clean(p)
	switch {
	case p == "" || clean == ".":
		return "", fmt.Errorf("invalid path %q: empty", p)
	case path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../"):
		return "", fmt.Errorf("invalid path %q: not inside the repository", p)
	case strings.Contains(p, "\\") || strings.ContainsRune(p, 0):
		return "", fmt.Errorf("invalid path %q: use forward slashes", p)
	}
	for _, part := range strings.Split(clean, "/") {
		if strings.EqualFold(part, ".git") {
			return "", fmt.Errorf("invalid path %q: inside .git", p)
		}
	}
	return clean, nil
}

// writeTree applies changes (path → new content, nil to delete) to tree and
// stores the new blobs and trees in st. It returns the new root tree's
// hash: tree.Hash itself when nothing changes. Only the trees along changed
// paths are rewritten.
func writeTree(st storer.EncodedObjectStorer, tree *object.Tree, changes map[string][]byte) (plumbing.Hash, error) {
	byPath := make(map[string][]byte, len(changes))
	for p, data := range changes {
		clean, err := cleanPath(p)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if _, dup := byPath[clean]; dup {
			return plumbing.ZeroHash, fmt.Errorf("invalid change: %q is named twice", clean)
		}
		byPath[clean] = data
	}
	h, _, err := rewrite(st, tree, "", byPath)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if h.IsZero() {
		// Every file was deleted: the root is the empty tree.
		return storeTree(st, nil)
	}
	return h, nil
}

// rewrite applies changes, keyed by paths relative to dir, to t (nil when
// the directory does not exist yet). It returns the zero hash when the
// directory ends up empty, and whether anything changed.
func rewrite(st storer.EncodedObjectStorer, t *object.Tree, dir string, changes map[string][]byte) (plumbing.Hash, bool, error) {
	var entries []object.TreeEntry
	if t != nil {
		entries = slices.Clone(t.Entries)
	}
	index := func(name string) int {
		return slices.IndexFunc(entries, func(e object.TreeEntry) bool { return e.Name == name })
	}
	files := map[string][]byte{}
	subdirs := map[string]map[string][]byte{}
	for p, data := range changes {
		first, rest, nested := strings.Cut(p, "/")
		if !nested {
			files[first] = data
			continue
		}
		if subdirs[first] == nil {
			subdirs[first] = map[string][]byte{}
		}
		subdirs[first][rest] = data
	}

	changed := false
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data, full := files[name], path.Join(dir, name)
		i := index(name)
		if i >= 0 && entries[i].Mode == filemode.Dir {
			return plumbing.ZeroHash, false, fmt.Errorf("invalid change: %s is a directory", full)
		}
		if data == nil {
			if i >= 0 {
				entries = slices.Delete(entries, i, i+1)
				changed = true
			}
			continue
		}
		h := plumbing.ComputeHash(plumbing.BlobObject, data)
		mode := filemode.Regular
		if i >= 0 {
			if entries[i].Hash == h && (entries[i].Mode == filemode.Regular || entries[i].Mode == filemode.Executable) {
				continue
			}
			if entries[i].Mode == filemode.Executable {
				mode = filemode.Executable
			}
		}
		if err := storeBlob(st, data); err != nil {
			return plumbing.ZeroHash, false, err
		}
		e := object.TreeEntry{Name: name, Mode: mode, Hash: h}
		if i >= 0 {
			entries[i] = e
		} else {
			entries = append(entries, e)
		}
		changed = true
	}
	for _, name := range slices.Sorted(maps.Keys(subdirs)) {
		full := path.Join(dir, name)
		var sub *object.Tree
		i := index(name)
		if i >= 0 {
			if entries[i].Mode != filemode.Dir {
				return plumbing.ZeroHash, false, fmt.Errorf("invalid change: %s is not a directory", full)
			}
			var err error
			if sub, err = object.GetTree(st, entries[i].Hash); err != nil {
				return plumbing.ZeroHash, false, fmt.Errorf("read %s: %w", full, err)
			}
		}
		h, subChanged, err := rewrite(st, sub, full, subdirs[name])
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		if !subChanged {
			continue
		}
		changed = true
		switch {
		case h.IsZero() && i >= 0:
			entries = slices.Delete(entries, i, i+1)
		case h.IsZero():
		case i >= 0:
			entries[i].Hash = h
		default:
			entries = append(entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
	}

	if !changed {
		if t == nil {
			return plumbing.ZeroHash, false, nil
		}
		return t.Hash, false, nil
	}
	if len(entries) == 0 {
		return plumbing.ZeroHash, true, nil
	}
	h, err := storeTree(st, entries)
	return h, true, err
}

func storeBlob(st storer.EncodedObjectStorer, data []byte) error {
	obj := st.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	obj.SetSize(int64(len(data)))
	w, err := obj.Writer()
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	_, err = st.SetEncodedObject(obj)
	return err
}

// storeTree stores a tree of entries in git's order: by name, a directory
// sorting as if its name ended in "/".
func storeTree(st storer.EncodedObjectStorer, entries []object.TreeEntry) (plumbing.Hash, error) {
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	slices.SortFunc(entries, func(a, b object.TreeEntry) int { return strings.Compare(key(a), key(b)) })
	t := &object.Tree{Entries: entries}
	obj := st.NewEncodedObject()
	if err := t.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return st.SetEncodedObject(obj)
}

var trailerKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)

// commitMessage appends the trailers, and BotTrailer, to msg as git's
// trailer block: a last paragraph of "Key: value" lines, sorted by key.
func commitMessage(msg string, trailers map[string]string) (string, error) {
	return formatMessage(msg, trailers, true)
}

// formatMessage appends the trailers, and BotTrailer when bot is set, to
// msg as commitMessage does. A BotTrailer among trailers is always dropped:
// only the caller decides whether a commit is the daemon's.
func formatMessage(msg string, trailers map[string]string, bot bool) (string, error) {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return "", errors.New("the commit message is empty")
	}
	all := maps.Clone(trailers)
	if all == nil {
		all = map[string]string{}
	}
	for k := range all {
		if strings.EqualFold(k, BotTrailer) {
			delete(all, k)
		}
	}
	if bot {
		all[BotTrailer] = "true"
	}
	var b strings.Builder
	b.WriteString(msg)
	if len(all) == 0 {
		b.WriteString("\n")
		return b.String(), nil
	}
	b.WriteString("\n\n")
	for _, k := range slices.Sorted(maps.Keys(all)) {
		v := strings.TrimSpace(all[k])
		if !trailerKey.MatchString(k) {
			return "", fmt.Errorf("invalid trailer key %q", k)
		}
		if v == "" || strings.ContainsAny(v, "\r\n") {
			return "", fmt.Errorf("invalid value for trailer %s: %q", k, all[k])
		}
		fmt.Fprintf(&b, "%s: %s\n", k, v)
	}
	return b.String(), nil
}

// Trailers returns the git trailers of a commit message: the "Key: value"
// lines of its last paragraph, when that paragraph is not the subject and
// consists of such lines only. Keys keep their case; a repeated key keeps
// its last value.
func Trailers(msg string) map[string]string {
	paragraphs := strings.Split(strings.TrimSpace(strings.ReplaceAll(msg, "\r\n", "\n")), "\n\n")
	if len(paragraphs) < 2 {
		return nil
	}
	last := strings.TrimSpace(paragraphs[len(paragraphs)-1])
	out := map[string]string{}
	for _, line := range strings.Split(last, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !trailerKey.MatchString(k) {
			return nil
		}
		out[k] = strings.TrimSpace(v)
	}
	return out
}

// isBot reports whether a commit message carries "Hal9-Migrate-Bot: true".
func isBot(msg string) bool {
	for k, v := range Trailers(msg) {
		if strings.EqualFold(k, BotTrailer) && strings.EqualFold(v, "true") {
			return true
		}
	}
	return false
}

// storeCommit writes a commit of tree on parent, by author and committer
// (the author when committer is empty) at when, and returns its hash.
func storeCommit(st storer.EncodedObjectStorer, author, committer Signature, when time.Time, msg string, tree, parent plumbing.Hash, key *openpgp.Entity) (plumbing.Hash, error) {
	if committer.Name == "" || committer.Email == "" {
		committer = author
	}
	commit := &object.Commit{
		Author:       object.Signature{Name: author.Name, Email: author.Email, When: when},
		Committer:    object.Signature{Name: committer.Name, Email: committer.Email, When: when},
		Message:      msg,
		TreeHash:     tree,
		ParentHashes: []plumbing.Hash{parent},
	}
	if err := signCommit(commit, key); err != nil {
		return plumbing.ZeroHash, err
	}
	obj := st.NewEncodedObject()
	if err := commit.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return st.SetEncodedObject(obj)
}
