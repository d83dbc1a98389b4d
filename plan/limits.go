package plan

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits bound the work of reading plans, whose content comes from anyone
// who can open a pull request: a plan vetted in CI and the daemon reading
// the same repository apply the same limits, so a plan CI accepts is not
// refused by the daemon, and a hostile one cannot stop either. Each field's
// yaml name is its key under plans: in the daemon's configuration, and the
// errors name it so (plans.maxFileSize).
//
// The zero value of a field means its default; DefaultLimits holds them.
type Limits struct {
	// MaxFileSize is the largest plan file read; a larger one is refused by
	// its size, unread. Default 1 MiB: the largest example plan is under
	// 5 KiB, and one mistake in a mebibyte of YAML (50,000 feature flags)
	// already takes CUE 9 s and 330 MiB to report.
	MaxFileSize ByteSize `yaml:"maxFileSize"`
	// MaxTotalSize bounds all plan files of one load together; the files
	// past it, in path order, are refused. Default 16 MiB: some 13,000
	// ordinary plans, far more than a repository holds, which the loader
	// holds in about 200 MiB at its peak with Go's default GC (360 MiB in
	// plan vet, which collects less often). 64 MiB would let a repository
	// take a daemon past a 512 MiB memory limit (570 MiB measured).
	MaxTotalSize ByteSize `yaml:"maxTotalSize"`
	// MaxNodes bounds the values a YAML file may expand into: mappings,
	// lists and scalars (not keys), each alias counted as the copy it
	// makes. Default 100000: the largest example plan has 111, and a
	// mebibyte of block YAML about 50,000 (as many feature flags), so
	// only aliases that multiply reach it, and a file of nested aliases
	// that would expand to billions stops there.
	MaxNodes int `yaml:"maxNodes"`
	// CUETimeout bounds CUE's evaluation of one plan: a CUE plan, or a
	// YAML or JSON plan the compiled check cannot prove valid (it has
	// errors to report). CUE's evaluation cannot be interrupted, so it
	// runs in a worker process that is killed at the deadline. Default
	// 5s: an example plan takes milliseconds, and one error among 50,000
	// feature flags takes about 9 s.
	CUETimeout time.Duration `yaml:"cueTimeout"`
	// CUEMemory bounds the memory that evaluation may take, over what the
	// worker holds when it is ready (20 to 35 MiB resident). Default 256 MiB; an
	// example plan takes a few. At most two workers run at once.
	CUEMemory ByteSize `yaml:"cueMemory"`
}

// DefaultLimits returns the limits a Validator applies when given none.
func DefaultLimits() Limits {
	return Limits{
		MaxFileSize:  1 << 20,
		MaxTotalSize: 16 << 20,
		MaxNodes:     100_000,
		CUETimeout:   5 * time.Second,
		CUEMemory:    256 << 20,
	}
}

// withDefaults returns l with its zero fields set to their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFileSize == 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	if l.MaxTotalSize == 0 {
		l.MaxTotalSize = d.MaxTotalSize
	}
	if l.MaxNodes == 0 {
		l.MaxNodes = d.MaxNodes
	}
	if l.CUETimeout == 0 {
		l.CUETimeout = d.CUETimeout
	}
	if l.CUEMemory == 0 {
		l.CUEMemory = d.CUEMemory
	}
	return l
}

// minCUEMemory is the least CUEMemory that evaluates an ordinary plan with
// room to spare; below it every CUE plan would fail.
const minCUEMemory = 16 << 20

// Check reports the first limit that cannot work, named by its key under
// plans: in the daemon's configuration. Zero fields are fine: they mean the
// default.
func (l Limits) Check() error {
	switch {
	case l.MaxFileSize < 0:
		return fmt.Errorf("plans.maxFileSize: %s is not a positive size", l.MaxFileSize)
	case l.MaxTotalSize < 0:
		return fmt.Errorf("plans.maxTotalSize: %s is not a positive size", l.MaxTotalSize)
	case l.MaxNodes < 0:
		return fmt.Errorf("plans.maxNodes: %d is not a positive number", l.MaxNodes)
	case l.CUETimeout < 0:
		return fmt.Errorf("plans.cueTimeout: %s is not a positive duration", l.CUETimeout)
	case l.CUEMemory < 0 || l.CUEMemory > 0 && l.CUEMemory < minCUEMemory:
		return fmt.Errorf("plans.cueMemory: %s is less than the %s an evaluation needs", l.CUEMemory, ByteSize(minCUEMemory))
	}
	l = l.withDefaults()
	if l.MaxTotalSize < l.MaxFileSize {
		return fmt.Errorf("plans.maxTotalSize: %s is less than plans.maxFileSize (%s)", l.MaxTotalSize, l.MaxFileSize)
	}
	return nil
}

// ByteSize is a size in bytes, written as a number of bytes or with a
// binary unit: 1048576, 1MiB, 512 KiB, 1.5GiB.
type ByteSize int64

var sizeUnits = []struct {
	name string
	size ByteSize
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// String writes s with the largest unit it reaches: whole when it is a
// whole number of that unit (1 MiB), else with one decimal (19.1 MiB).
func (s ByteSize) String() string {
	for _, u := range sizeUnits {
		if s >= u.size || -s >= u.size {
			if s%u.size == 0 {
				return fmt.Sprintf("%d %s", s/u.size, u.name)
			}
			return fmt.Sprintf("%.1f %s", float64(s)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%d B", int64(s))
}

// MarshalText writes s as String does, without the space (1MiB), which
// UnmarshalText reads back.
func (s ByteSize) MarshalText() ([]byte, error) {
	return []byte(strings.ReplaceAll(s.String(), " ", "")), nil
}

// UnmarshalText reads a size as ParseByteSize does; it makes
// ByteSize usable as a flag and in YAML.
func (s *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// UnmarshalYAML reads a size as ParseByteSize does, and
// names the line of a wrong one, as the daemon's configuration errors do.
func (s *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if err := s.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

var errSize = errors.New("expected a number of bytes, or one with a unit: KiB, MiB or GiB")

// ParseByteSize reads a size: a number of bytes (1048576, 100B), or a
// number with a binary unit (1MiB, 512 KiB, 1.5GiB). Decimal units (MB)
// are refused rather than guessed.
func ParseByteSize(text string) (ByteSize, error) {
	t := strings.TrimSpace(text)
	num, unit := t, ByteSize(1)
	for _, u := range append(slices.Clone(sizeUnits), struct {
		name string
		size ByteSize
	}{"B", 1}) {
		if n, ok := strings.CutSuffix(t, u.name); ok {
			num, unit = strings.TrimSpace(n), u.size
			break
		}
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/int64(unit) || n < math.MinInt64/int64(unit) {
			return 0, fmt.Errorf("size %q is too large", text)
		}
		return ByteSize(n) * unit, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || unit == 1 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q: %w", text, errSize)
	}
	if math.Abs(f*float64(unit)) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", text)
	}
	return ByteSize(f * float64(unit)), nil
}

// ValidatorOption configures a Validator.
type ValidatorOption func(*Validator)

// WithLimits makes a Validator apply l; zero fields keep their defaults.
func WithLimits(l Limits) ValidatorOption {
	return func(v *Validator) { v.limits = l.withDefaults() }
}

// The errors a limit raises end with the setting that would raise it, so
// that a person who trusts the file knows what to change.
func limitError(file string, setting string, format string, args ...any) Error {
	return Error{File: file, Message: fmt.Sprintf(format, args...) + " (limit: plans." + setting + ")"}
}

// sizeOf is the size of a source: its data, or the size its reader
// recorded without loading it.
func sizeOf(src Source) int64 {
	if len(src.Data) == 0 && src.Size > 0 {
		return src.Size
	}
	return int64(len(src.Data))
}

// refuseBySize decides which sources are not parsed at all because of
// their size: one over MaxFileSize, or one past MaxTotalSize when the
// sources are added up in path order (so that the same tree is always cut
// at the same file, whatever order it was read in). A source whose reader
// left its data out is refused too, whatever its size, unless the sources
// are only measured yet (Load asks which of them to read). The result has
// an error for each refused source, by index.
func (l Limits) refuseBySize(sources []Source, measured bool) map[int]Error {
	refused := map[int]Error{}
	order := make([]int, len(sources))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(sources[a].Path, sources[b].Path) })
	var total int64
	for _, i := range order {
		src := sources[i]
		size := sizeOf(src)
		switch {
		case size > int64(l.MaxFileSize):
			refused[i] = limitError(src.Path, "maxFileSize", "%s is over the %s limit for one plan file", ByteSize(size), l.MaxFileSize)
			continue
		case total+size > int64(l.MaxTotalSize):
			refused[i] = limitError(src.Path, "maxTotalSize", "not read: the plan files up to this one, in path order, come to %s, over the %s limit for all plan files together",
				ByteSize(total+size), l.MaxTotalSize)
		case len(src.Data) == 0 && src.Size > 0 && !measured:
			refused[i] = limitError(src.Path, "maxFileSize", "not read: %s is over the limit for one plan file of the reader that loaded it", ByteSize(size))
		}
		total += size
	}
	return refused
}
