// Package fake is a driver that moves no real workloads. It keeps each plan's
// stable and candidate as a record in memory, or in files that outlive the
// process, and brings about every call at once: Observe returns exactly what
// was applied, with no convergence delay, readiness lag or routing error.
//
// Engine tests use it to drive the reconciler: FailNext makes the next call of
// an operation fail, Calls returns the ordered log of calls, and an injected
// clock (WithClock) decides when jobs finish. The file-backed fake (NewFile)
// serves the crash test, where the engine runs as a subprocess that is killed
// at random moments: every change is on disk before the call returns, and
// every Apply and Restore is appended to a log the test reads back
// (ReadApplies).
//
// Jobs do not run anything. A job's outcome is read from its plan.Run by
// convention:
//
//	FAKE_JOB_DURATION  how long the job runs on the fake's clock, in Go
//	                   syntax ("90s"); default 0, done at once
//	FAKE_JOB_EXIT      its exit code; default 0, success
//
// and a Run.Timeout shorter than the duration ends the job as failed once the
// timeout has passed, as a real engine's deadline would.
//
// Replicas follow the traffic split of a fixed total (WithReplicas, default
// 10): the candidate gets its share rounded to the nearest replica, and at
// least one while it takes traffic or mirrored requests; stable gets the rest,
// at least one until it is decommissioned, then none. Every replica is ready.
package fake

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/internal/atomicfile"
	"github.com/hal9ai/hal9-migrate/plan"
)

// DefaultReplicas is the replica total split between stable and candidate
// unless WithReplicas says otherwise.
const DefaultReplicas = 10

// Fake is a set of fake workloads keyed by plan name. It is safe for
// concurrent use.
type Fake struct {
	cfg config
	// dir holds the state files; empty for an in-memory fake.
	dir string

	mu      sync.Mutex
	drivers map[string]*Driver
}

type config struct {
	clock    clock.PassiveClock
	replicas int
}

// Option configures a Fake.
type Option func(*config)

// WithClock sets the clock that starts jobs and decides when they are done,
// and that stamps the applies log. The default is the real clock.
func WithClock(c clock.PassiveClock) Option {
	return func(cfg *config) { cfg.clock = c }
}

// WithReplicas sets the replica total split between stable and candidate.
func WithReplicas(n int) Option {
	return func(cfg *config) { cfg.replicas = n }
}

func newFake(opts []Option) *Fake {
	cfg := config{clock: clock.RealClock{}, replicas: DefaultReplicas}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.replicas < 1 {
		cfg.replicas = 1
	}
	return &Fake{cfg: cfg, drivers: map[string]*Driver{}}
}

// New returns an in-memory Fake with no workloads; a plan's workloads appear,
// stable at full strength and no traffic to the candidate, on first use.
func New(opts ...Option) *Fake {
	return newFake(opts)
}

// NewFile returns a Fake whose state lives in dir, creating dir if needed,
// and reads back every plan's state found there. Each change is written to
// dir/<plan>.json (to a temporary file, fsync'd, renamed over the old one,
// then the directory fsync'd) before the call that made it returns, so a
// process killed at any instant leaves either the old state or the new one.
// Every Apply and Restore is then appended, fsync'd, to
// dir/<plan>.applies.jsonl (see ReadApplies).
//
// Only one Fake, in one process, may use dir at a time: nothing locks it, and
// two writers would overwrite each other's state. A crash test starts the next
// process only after the previous one is dead.
//
// Opening repairs what a crash can leave behind: temporary files are removed,
// a torn last line of an applies log is cut off, and a change that reached the
// state file but not the log (the process died between the two writes) is
// appended to the log, so after NewFile the log's last line always matches
// the state.
func NewFile(dir string, opts ...Option) (*Fake, error) {
	f := newFake(opts)
	f.dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fake: open %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("fake: open %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if atomicfile.IsTemp(name) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("fake: open %s: remove leftover %s: %w", dir, name, err)
			}
			continue
		}
		planName, ok := strings.CutSuffix(name, stateSuffix)
		if !ok || e.IsDir() || checkName(planName) != nil {
			continue
		}
		rec, err := readRecord(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("fake: open %s: %w", dir, err)
		}
		d := f.newDriver(planName)
		d.rec = rec
		if err := repairLog(dir, planName, rec.Last); err != nil {
			return nil, fmt.Errorf("fake: open %s: %w", dir, err)
		}
		f.drivers[planName] = d
	}
	return f, nil
}

// Dir returns the directory of a file-backed Fake, "" for an in-memory one.
func (f *Fake) Dir() string { return f.dir }

// Driver returns the driver for the workloads of the plan called name,
// creating them on first use. Every call with the same name returns the same
// driver. For a file-backed Fake, a name that cannot be a file name gives a
// driver whose every call fails.
func (f *Fake) Driver(name string) *Driver {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.drivers[name]
	if !ok {
		d = f.newDriver(name)
		f.drivers[name] = d
	}
	return d
}

// Opener returns an Opener that hands out the driver of each plan by its
// metadata.name, whatever driver the plan configures.
func (f *Fake) Opener() drivers.Opener {
	return func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("fake: open driver: %w", err)
		}
		if p == nil {
			return nil, errors.New("fake: open driver: no plan")
		}
		if p.Metadata.Name == "" {
			return nil, errors.New("fake: open driver: plan has no metadata.name")
		}
		if f.dir != "" {
			if err := checkName(p.Metadata.Name); err != nil {
				return nil, fmt.Errorf("fake: open driver: %w", err)
			}
		}
		return f.Driver(p.Metadata.Name), nil
	}
}

func (f *Fake) newDriver(name string) *Driver {
	d := &Driver{
		name:  name,
		cfg:   f.cfg,
		dir:   f.dir,
		rec:   freshRecord(f.cfg.replicas),
		fails: map[string][]error{},
	}
	if f.dir != "" {
		d.broken = checkName(name)
	}
	return d
}

// checkName reports whether name can name the files of a plan's state.
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\`+"\x00") || filepath.Base(name) != name {
		return fmt.Errorf("plan name %q cannot be a file name", name)
	}
	return nil
}
