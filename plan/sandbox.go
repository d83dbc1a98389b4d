package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// The sandbox evaluates plans with CUE in worker processes, because CUE's
// evaluation cannot be interrupted: a CUE plan may compute for hours (a
// comprehension nested over list.Range), and even plain data costs CUE time
// that grows faster than its size. A goroutine given up on at a deadline
// goes on computing and allocating; a process can be killed, and can be
// given a memory limit.
//
// A worker is this same binary, run again with workerEnv set: package
// plan's init function (worker.go) then serves evaluations on file
// descriptors 3 (requests) and 4 (replies) instead of running main, or a
// test binary's tests. So every program that imports this package, test
// binaries included, can evaluate plans without any hook of its own.
//
// A worker is kept between evaluations, and between Validate calls, and
// exits after idleTimeout without work, or as soon as its parent does. One
// whose evaluation passes the deadline is killed; the next evaluation
// starts another. If no worker can start, the plans that need one get an
// error saying so: there is no fallback to evaluating in process.

// workerEnv is the environment variable that makes a process a worker; its
// value is the Limits it applies, as JSON.
const workerEnv = "HAL9_MIGRATE_CUE_WORKER"

// workerProtocol is the worker's first reply, which tells its parent that
// it is ready and speaks the same protocol.
const workerProtocol = "hal9-migrate CUE worker 1"

const (
	// idleTimeout is how long a worker waits for work before it is
	// closed. A daemon validates once per sync; starting a worker again
	// takes some 40 ms.
	idleTimeout = 10 * time.Second
	// startTimeout bounds a worker's start: the process, and building
	// the schema. It is not the plan's time, so it is not cueTimeout.
	startTimeout = 30 * time.Second
	// maxEvaluations bounds the workers, and so the memory they take
	// together (CUEMemory each).
	maxEvaluations = 2
)

// Exit codes of a worker that stops itself.
const (
	exitOverMemory = 3 // its memory went past CUEMemory
	exitOverCPU    = 4 // its CPU time went past what the deadline allows
)

// workRequest asks a worker to check one file.
type workRequest struct {
	Path       string `json:"path"`
	Data       []byte `json:"data"`
	Discovered bool   `json:"discovered,omitempty"`
}

// workReply is what check returned in the worker, or its greeting.
type workReply struct {
	Ready     string            `json:"ready,omitempty"`
	Plan      *Plan             `json:"plan,omitempty"`
	Positions map[string][2]int `json:"positions,omitempty"`
	Skipped   bool              `json:"skipped,omitempty"`
	Errors    Errors            `json:"errors,omitempty"`
}

// sandbox keeps the workers of one Validator.
type sandbox struct {
	limits Limits
	slots  chan struct{} // one per evaluation under way
	exe    string        // the worker's program; "": this one (tests change it)

	mu   sync.Mutex
	idle []*worker
}

func newSandbox(l Limits) *sandbox {
	return &sandbox{limits: l, slots: make(chan struct{}, min(maxEvaluations, runtime.GOMAXPROCS(0)))}
}

// check checks src in a worker, as Validator.check would in process.
func (s *sandbox) check(src Source) (*Plan, bool, Errors) {
	s.slots <- struct{}{}
	defer func() { <-s.slots }()
	w, err := s.take()
	if err != nil {
		return nil, false, Errors{{File: src.Path, Message: "cannot evaluate: " + err.Error()}}
	}
	r, err := w.do(workRequest{Path: src.Path, Data: src.Data, Discovered: src.Discovered}, s.limits.CUETimeout)
	switch {
	case errors.Is(err, errTimeout):
		return nil, false, Errors{limitError(src.Path, "cueTimeout", "CUE evaluation took longer than %s", s.limits.CUETimeout)}
	case errors.Is(err, errOverMemory):
		return nil, false, Errors{limitError(src.Path, "cueMemory", "CUE evaluation needed more than %s of memory", s.limits.CUEMemory)}
	case err != nil:
		return nil, false, Errors{{File: src.Path, Message: "cannot evaluate: " + err.Error()}}
	}
	s.put(w)
	if r.Plan != nil {
		r.Plan.File, r.Plan.positions = src.Path, r.Positions
	}
	return r.Plan, r.Skipped, r.Errors
}

// take returns an idle worker, or starts one.
func (s *sandbox) take() (*worker, error) {
	s.mu.Lock()
	for len(s.idle) > 0 {
		w := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		w.timer.Stop()
		select {
		case <-w.exited: // it died while idle
			continue
		default:
		}
		s.mu.Unlock()
		return w, nil
	}
	s.mu.Unlock()
	return startWorker(s.exe, s.limits)
}

// put keeps w for the next evaluation, and closes it after idleTimeout
// unless one takes it first.
func (s *sandbox) put(w *worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle = append(s.idle, w)
	w.timer = time.AfterFunc(idleTimeout, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if i := slices.Index(s.idle, w); i >= 0 {
			s.idle = slices.Delete(s.idle, i, i+1)
			w.close()
		}
	})
}

// close closes the idle workers and waits until they have exited.
func (s *sandbox) close() {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, w := range idle {
		w.timer.Stop()
		w.close()
		<-w.exited
	}
}

var (
	errTimeout    = errors.New("evaluation took too long")
	errOverMemory = errors.New("evaluation took too much memory")
)

// worker is one worker process.
type worker struct {
	cmd      *exec.Cmd
	requests *os.File // its fd 3
	enc      *json.Encoder
	dec      *json.Decoder
	stderr   *headWriter
	exited   chan struct{} // closed once the process has been waited for
	timer    *time.Timer   // closes it when idle
}

// startWorker starts exe, or this program when exe is "", as a worker, and
// waits for its greeting.
func startWorker(exe string, l Limits) (*worker, error) {
	var err error
	if exe == "" {
		if exe, err = executable(); err != nil {
			return nil, fmt.Errorf("the CUE worker cannot start: %w", err)
		}
	}
	config, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("the CUE worker cannot start: %w", err)
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, fmt.Errorf("the CUE worker cannot start: %w", err)
	}
	w := &worker{requests: reqW, enc: json.NewEncoder(reqW), dec: json.NewDecoder(repR),
		stderr: &headWriter{max: 4 << 10}, exited: make(chan struct{})}
	w.cmd = &exec.Cmd{
		Path:        exe,
		Args:        []string{"hal9-migrate (CUE worker)"},
		Env:         append(os.Environ(), workerEnv+"="+string(config)),
		ExtraFiles:  []*os.File{reqR, repW},
		Stderr:      w.stderr,
		SysProcAttr: workerProcAttr(),
	}
	err = w.cmd.Start()
	reqR.Close()
	repW.Close()
	if err != nil {
		reqW.Close()
		repR.Close()
		return nil, fmt.Errorf("the CUE worker cannot start: %w", err)
	}
	go func() {
		w.cmd.Wait()
		reqW.Close()
		repR.Close()
		close(w.exited)
	}()

	ready := make(chan error, 1)
	go func() {
		var r workReply
		err := w.dec.Decode(&r)
		if err == nil && r.Ready != workerProtocol {
			err = fmt.Errorf("it answered %q, not %q", r.Ready, workerProtocol)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(startTimeout):
		err = fmt.Errorf("no answer within %s", startTimeout)
	}
	if err != nil {
		w.kill()
		return nil, fmt.Errorf("the CUE worker did not start: %w", w.failure(err))
	}
	return w, nil
}

// do sends one request and waits for its reply, for timeout at most; a
// worker that does not answer in time is killed.
func (w *worker) do(req workRequest, timeout time.Duration) (workReply, error) {
	type result struct {
		r   workReply
		err error
	}
	done := make(chan result, 1)
	go func() {
		var res result
		if res.err = w.enc.Encode(req); res.err == nil {
			res.err = w.dec.Decode(&res.r)
		}
		done <- res
	}()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case res := <-done:
		if res.err != nil {
			w.kill()
			err := w.failure(res.err)
			if !errors.Is(err, errTimeout) && !errors.Is(err, errOverMemory) {
				err = fmt.Errorf("the CUE worker failed: %w", err)
			}
			return workReply{}, err
		}
		return res.r, nil
	case <-deadline.C:
		w.kill()
		<-done
		return workReply{}, errTimeout
	}
}

// failure explains why a worker stopped answering, once it has exited.
func (w *worker) failure(err error) error {
	<-w.exited
	out := w.stderr.String()
	code := -1
	if st := w.cmd.ProcessState; st != nil {
		code = st.ExitCode()
	}
	switch {
	case code == exitOverMemory || slices.ContainsFunc(outOfMemory, func(s string) bool { return strings.Contains(out, s) }):
		return errOverMemory
	case code == exitOverCPU:
		return errTimeout
	}
	why := err.Error()
	if st := w.cmd.ProcessState; st != nil {
		why = st.String()
	}
	if line, _, _ := strings.Cut(strings.TrimSpace(out), "\n"); line != "" {
		why += ": " + line
	}
	return errors.New(why)
}

// outOfMemory are what a Go program, or the race detector's runtime, says
// when it dies because the kernel refused it memory or a thread's stack.
var outOfMemory = []string{"out of memory", "cannot allocate memory", "failed to create new OS thread",
	"pthread_create failed", "failed to allocate", "address space collisions"}

// kill stops the worker at once and waits until it has exited.
func (w *worker) kill() {
	if w.cmd.Process != nil {
		w.cmd.Process.Kill()
	}
	<-w.exited
}

// close lets an idle worker exit: it reads the end of its requests.
func (w *worker) close() { w.requests.Close() }

// headWriter keeps the first max bytes written to it: a Go program that
// dies says why first, then dumps its goroutines.
type headWriter struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (h *headWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (h *headWriter) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.buf.String()
}

// executable is the program to run as a worker: this one. On Linux,
// /proc/self/exe is this process's own binary even after an upgrade has
// replaced the file on disk.
func executable() (string, error) {
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			return "/proc/self/exe", nil
		}
	}
	return os.Executable()
}
