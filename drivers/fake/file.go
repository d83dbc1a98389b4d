package fake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/internal/atomicfile"
)

const (
	stateSuffix   = ".json"
	appliesSuffix = ".applies.jsonl"
)

// Applied is one line of the applies log: an Apply or a Restore that a
// file-backed driver brought about.
type Applied struct {
	// Seq numbers the changes of one plan from 1, without gaps.
	Seq int64 `json:"seq"`
	// Time is when the change was made, on the Fake's clock (the wall clock
	// unless WithClock says otherwise).
	Time time.Time `json:"time"`
	// Op is OpApply or OpRestore.
	Op     string         `json:"op"`
	Target drivers.Target `json:"target"`
}

// StatePath returns where a file-backed Fake in dir keeps the state of the
// plan called name.
func StatePath(dir, name string) string { return filepath.Join(dir, name+stateSuffix) }

// AppliesPath returns where a file-backed Fake in dir keeps the applies log of
// the plan called name.
func AppliesPath(dir, name string) string { return filepath.Join(dir, name+appliesSuffix) }

// ReadApplies returns the applies log of the plan called name in dir, oldest
// first; no log is no changes. It needs no open Fake, so a test can read the
// log of a process it has killed. The state is written before the log, so
// after a crash the log can be one change behind the state file until the
// next NewFile repairs it; a last line cut short (only a machine crash can do
// that) is left out. Any other unreadable line is an error.
func ReadApplies(dir, name string) ([]Applied, error) {
	entries, _, err := readApplies(AppliesPath(dir, name))
	return entries, err
}

// readApplies parses the log at path and returns its complete lines and the
// length of the file they take up.
func readApplies(path string) ([]Applied, int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read applies log: %w", err)
	}
	var (
		entries []Applied
		valid   int64
	)
	for n := 1; len(b) > 0; n++ {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // torn last line
		}
		var a Applied
		if err := json.Unmarshal(b[:i], &a); err != nil {
			return nil, 0, fmt.Errorf("read applies log %s:%d: %w", path, n, err)
		}
		entries = append(entries, a)
		valid += int64(i) + 1
		b = b[i+1:]
	}
	return entries, valid, nil
}

// repairLog brings the applies log of name in line with last, the latest
// change in the state file: it cuts off a torn last line and appends last if
// the process died before logging it.
func repairLog(dir, name string, last *Applied) error {
	path := AppliesPath(dir, name)
	entries, valid, err := readApplies(path)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() != valid {
		if err := truncateSync(path, valid); err != nil {
			return fmt.Errorf("cut torn line off %s: %w", path, err)
		}
	}
	var logged int64
	if len(entries) > 0 {
		logged = entries[len(entries)-1].Seq
	}
	switch {
	case last == nil || last.Seq == logged:
		return nil
	case last.Seq == logged+1:
		return appendApplied(dir, name, *last)
	default:
		return fmt.Errorf("applies log %s ends at change %d but the state is at change %d", path, logged, last.Seq)
	}
}

func readRecord(path string) (record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return record{}, fmt.Errorf("read state: %w", err)
	}
	var r record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return record{}, fmt.Errorf("read state %s: %w", path, err)
	}
	return r, nil
}

// writeRecord replaces the state file of name atomically and durably.
func writeRecord(dir, name string, r record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return atomicfile.Write(StatePath(dir, name), append(b, '\n'), 0o644)
}

// appendApplied appends a to the applies log of name with one write and
// syncs it.
func appendApplied(dir, name string, a Applied) error {
	line, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("append to applies log: %w", err)
	}
	path := AppliesPath(dir, name)
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("append to applies log: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("append to applies log %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("append to applies log %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("append to applies log %s: %w", path, err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// A new file is durable only once its directory entry is.
		if err := atomicfile.SyncDir(dir); err != nil {
			return fmt.Errorf("append to applies log %s: %w", path, err)
		}
	}
	return nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
