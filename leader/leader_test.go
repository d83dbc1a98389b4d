package leader_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/leader"
)

// Short timings, so that a takeover takes seconds.
var fast = leader.Durations{Lease: 2 * time.Second, Renew: 1500 * time.Millisecond, Retry: 200 * time.Millisecond}

// cuttable is a transport that can be cut off, as a dead or partitioned
// replica is: every request fails from then on.
type cuttable struct {
	rt  http.RoundTripper
	cut *atomic.Bool
}

func (c cuttable) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("cut off from the API server")
	}
	return c.rt.RoundTrip(r)
}

// stage records who acts when, and fails the test if two act at once.
type stage struct {
	t      *testing.T
	mu     sync.Mutex
	acting string
	starts []start
}

type start struct {
	who string
	at  time.Time
}

func (s *stage) work(who string) func(ctx context.Context) {
	return func(ctx context.Context) {
		s.mu.Lock()
		if s.acting != "" {
			s.t.Errorf("%s started leading while %s still acts", who, s.acting)
		}
		s.acting = who
		s.starts = append(s.starts, start{who, time.Now()})
		s.mu.Unlock()
		<-ctx.Done()
		s.mu.Lock()
		s.acting = ""
		s.mu.Unlock()
	}
}

func (s *stage) leader() (string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acting == "" {
		return "", time.Time{}
	}
	return s.acting, s.starts[len(s.starts)-1].at
}

func (s *stage) waitFor(t *testing.T, ok func(who string) bool, within time.Duration) (string, time.Time) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if who, at := s.leader(); who != "" && ok(who) {
			return who, at
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader as wanted within %s (starts so far: %v)", within, s.starts)
	return "", time.Time{}
}

type candidate struct {
	name   string
	cut    atomic.Bool
	cancel context.CancelFunc
	done   chan error
}

func campaign(t *testing.T, cfg *rest.Config, lease leader.Lease, s *stage, name string) *candidate {
	c := &candidate{name: name, done: make(chan error, 1)}
	cc := rest.CopyConfig(cfg)
	cc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return cuttable{rt: rt, cut: &c.cut} })
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { c.done <- leader.Run(ctx, cc, name, lease, fast, s.work(name)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Errorf("candidate %s did not return 10s after its context ended", name)
		}
	})
	return c
}

func holder(t *testing.T, cfg *rest.Config, lease leader.Lease) string {
	t.Helper()
	l, err := k8stest.Client(t, cfg).CoordinationV1().Leases(lease.Namespace).Get(context.Background(), lease.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func other(c map[string]*candidate, name string) string {
	for n := range c {
		if n != name {
			return n
		}
	}
	return ""
}

// TestTakeoverAfterKill kills the leader (its context cancelled and its
// connection cut, so it cannot release the lease) and checks the standby
// leads within the lease duration.
func TestTakeoverAfterKill(t *testing.T) {
	cfg := k8stest.Env(t)
	lease := leader.Lease{Namespace: k8stest.Namespace(t, cfg), Name: "hal9-migrate"}
	s := &stage{t: t}
	cs := map[string]*candidate{}
	for _, n := range []string{"replica-a", "replica-b"} {
		cs[n] = campaign(t, cfg, lease, s, n)
	}
	first, _ := s.waitFor(t, func(string) bool { return true }, 10*time.Second)
	if h := holder(t, cfg, lease); h != first {
		t.Fatalf("%s acts but the lease names %q", first, h)
	}
	// Let a renewal or two happen, then kill.
	time.Sleep(fast.Lease)
	dead := cs[first]
	dead.cut.Store(true)
	dead.cancel()
	killed := time.Now()

	second, at := s.waitFor(t, func(who string) bool { return who != first }, 3*fast.Lease)
	if second != other(cs, first) {
		t.Fatalf("leader after the kill = %s", second)
	}
	took := at.Sub(killed)
	t.Logf("%s killed; %s led %s later (lease duration %s)", first, second, took.Round(time.Millisecond), fast.Lease)
	// The lease was last renewed before the kill, so it expires within
	// its duration of it; the standby sees that at its next retry (client-go
	// adds up to 20% jitter to the retry period).
	if limit := fast.Lease + 3*fast.Retry; took > limit {
		t.Errorf("takeover took %s, more than the lease duration and its retries (%s)", took, limit)
	}
	if h := holder(t, cfg, lease); h != second {
		t.Errorf("the lease names %q, want %s", h, second)
	}
	if err := <-dead.done; !errors.Is(err, context.Canceled) {
		t.Errorf("the killed candidate's Run = %v, want context.Canceled", err)
	}
	dead.done <- nil // for the cleanup
}

// TestPartitionedLeaderStopsFirst cuts the leader off without stopping it:
// its work must end (renew deadline) before the standby's begins (lease
// expiry), and it must not act again while cut off.
func TestPartitionedLeaderStopsFirst(t *testing.T) {
	cfg := k8stest.Env(t)
	lease := leader.Lease{Namespace: k8stest.Namespace(t, cfg), Name: "hal9-migrate"}
	s := &stage{t: t}
	cs := map[string]*candidate{}
	for _, n := range []string{"replica-a", "replica-b"} {
		cs[n] = campaign(t, cfg, lease, s, n)
	}
	first, _ := s.waitFor(t, func(string) bool { return true }, 10*time.Second)
	cs[first].cut.Store(true)
	second, _ := s.waitFor(t, func(who string) bool { return who != first }, 3*fast.Lease)
	// stage.work fails the test if the two overlapped. Heal the partition:
	// the old leader becomes the standby.
	cs[first].cut.Store(false)
	time.Sleep(2 * fast.Lease)
	if who, _ := s.leader(); who != second {
		t.Errorf("after healing, %q leads, want %s to keep the lease", who, second)
	}
}

// TestReleaseOnShutdown stops the leader cleanly: it releases the lease
// after its work returned, and the standby leads well within the lease
// duration.
func TestReleaseOnShutdown(t *testing.T) {
	cfg := k8stest.Env(t)
	lease := leader.Lease{Namespace: k8stest.Namespace(t, cfg), Name: "hal9-migrate"}
	slow := leader.Durations{Lease: 10 * time.Second, Renew: 5 * time.Second, Retry: 200 * time.Millisecond}
	s := &stage{t: t}
	var cancels []context.CancelFunc
	var dones []chan error
	for _, n := range []string{"replica-a", "replica-b"} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- leader.Run(ctx, cfg, n, lease, slow, s.work(n)) }()
		cancels, dones = append(cancels, cancel), append(dones, done)
	}
	defer func() {
		for i, c := range cancels {
			c()
			<-dones[i]
		}
	}()
	first, _ := s.waitFor(t, func(string) bool { return true }, 15*time.Second)
	i := 0
	if first == "replica-b" {
		i = 1
	}
	stopped := time.Now()
	cancels[i]()
	if err := <-dones[i]; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	dones[i] <- nil
	_, at := s.waitFor(t, func(who string) bool { return who != first }, slow.Lease)
	if took := at.Sub(stopped); took > slow.Lease/2 {
		t.Errorf("after a clean stop the standby took %s to lead; the lease was not released", took)
	}
}

func TestRunRefusesBadSettings(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	work := func(context.Context) {}
	for _, tc := range []struct {
		name     string
		identity string
		lease    leader.Lease
		d        leader.Durations
		work     func(context.Context)
	}{
		{"no identity", "", leader.Lease{Namespace: "ns", Name: "l"}, fast, work},
		{"no lease name", "a", leader.Lease{Namespace: "ns"}, fast, work},
		{"no work", "a", leader.Lease{Namespace: "ns", Name: "l"}, fast, nil},
		{"renew not shorter than the lease", "a", leader.Lease{Namespace: "ns", Name: "l"}, leader.Durations{Lease: time.Second, Renew: time.Second, Retry: 100 * time.Millisecond}, work},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := leader.Run(ctx, cfg, tc.identity, tc.lease, tc.d, tc.work)
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run = %v, want a settings error", err)
			}
		})
	}
}
