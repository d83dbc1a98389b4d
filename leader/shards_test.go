package leader_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/leader"
)

// Short timings, so that a takeover takes seconds; Renew + StepTimeout <
// Lease, as CheckSharding wants.
var shardTimings = leader.Durations{Lease: 3 * time.Second, Renew: 1500 * time.Millisecond, Retry: 250 * time.Millisecond}

const nShards = 8

// replica is one Shards running, with a transport that can be cut off as
// a dead or partitioned replica's is.
type replica struct {
	name   string
	s      *leader.Shards
	cut    atomic.Bool
	cancel context.CancelFunc
	done   chan error
}

func startReplica(t *testing.T, cfg *rest.Config, ns, name string) *replica {
	t.Helper()
	r := &replica{name: name, done: make(chan error, 1)}
	cc := rest.CopyConfig(cfg)
	cc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return cuttable{rt: rt, cut: &r.cut} })
	s, err := leader.NewShards(cc, name, leader.Sharding{Namespace: ns, Name: "hal9", Shards: nShards, Durations: shardTimings,
		StepTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Errorf("replica %s did not stop 15s after its context ended", name)
		}
	})
	return r
}

// keys are one key of each shard.
func keys() []string {
	out := make([]string, nShards)
	found := 0
	for i := 0; found < nShards; i++ {
		k := fmt.Sprintf("plan-%d", i)
		if s := leader.ShardOf(k, nShards); out[s] == "" {
			out[s] = k
			found++
		}
	}
	return out
}

// watch samples who owns each shard every few milliseconds until the test
// ends, and fails it when two replicas own one shard at once.
type watch struct {
	t    *testing.T
	mu   sync.Mutex
	reps []*replica
}

func (w *watch) add(r *replica) {
	w.mu.Lock()
	w.reps = append(w.reps, r)
	w.mu.Unlock()
}

func (w *watch) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	ks := keys()
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w.mu.Lock()
			reps := slices.Clone(w.reps)
			w.mu.Unlock()
			for i, k := range ks {
				var owners []string
				for _, r := range reps {
					if r.s.Owns(k) {
						owners = append(owners, r.name)
					}
				}
				if len(owners) > 1 {
					t.Errorf("shard %d is owned by %s at once", i, strings.Join(owners, " and "))
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

// waitShares waits until the replicas hold want shards each (in any order
// of replicas) and together hold every shard.
func waitShares(t *testing.T, reps []*replica, want []int, within time.Duration) {
	t.Helper()
	slices.Sort(want)
	var got []int
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = got[:0]
		for _, r := range reps {
			got = append(got, r.s.Held())
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("the replicas hold %v shards, want %v within %s", got, want, within)
}

// TestShardsRebalance: three replicas share eight shards 3/3/2; a fourth
// joins and they rebalance to 2 each; one stops cleanly and its shards
// are taken at once; one is cut off and its shards are taken only after
// its leases expire. No shard is ever owned by two at once.
func TestShardsRebalance(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	w := &watch{t: t}
	w.start(t)
	var reps []*replica
	for _, n := range []string{"replica-a", "replica-b", "replica-c"} {
		r := startReplica(t, cfg, ns, n)
		w.add(r)
		reps = append(reps, r)
	}
	waitShares(t, reps, []int{3, 3, 2}, 20*time.Second)

	d := startReplica(t, cfg, ns, "replica-d")
	w.add(d)
	reps = append(reps, d)
	waitShares(t, reps, []int{2, 2, 2, 2}, 20*time.Second)
	if m := d.s.Members(); len(m) != 4 {
		t.Errorf("replica-d sees members %v, want 4", m)
	}

	// A clean stop releases: the others take its shards well before the
	// leases would expire.
	stopped := time.Now()
	reps[0].cancel()
	if err := <-reps[0].done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	reps[0].done <- nil
	waitShares(t, reps[1:], []int{3, 3, 2}, 20*time.Second)
	t.Logf("after a clean stop the others held every shard %s later", time.Since(stopped).Round(time.Millisecond))

	// A replica cut off stops working on its shards after the renew
	// deadline; the others take them once the leases expire.
	cutAt := time.Now()
	victim := reps[1]
	held := victim.s.Held()
	victim.cut.Store(true)
	for deadline := time.Now().Add(shardTimings.Renew + time.Second); victim.s.Held() > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cut-off replica still works on %d shards %s after the cut", victim.s.Held(), time.Since(cutAt))
		}
	}
	rest := []*replica{reps[2], reps[3]}
	waitShares(t, rest, []int{4, 4}, 30*time.Second)
	took := time.Since(cutAt)
	t.Logf("the %d shards of the cut-off replica were taken %s after the cut (lease %s)", held, took.Round(time.Millisecond), shardTimings.Lease)
	if took < shardTimings.Lease-shardTimings.Retry {
		t.Errorf("the shards of the cut-off replica were taken %s after the cut, before their leases could expire (%s)", took, shardTimings.Lease)
	}
	victim.cut.Store(false)
}

// TestShardsWaitForWorkInFlight: a shard given up to a replica that joins
// is released only once the work held on it has ended, and that work's
// context ends as soon as it is given up.
func TestShardsWaitForWorkInFlight(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	w := &watch{t: t}
	w.start(t)
	a := startReplica(t, cfg, ns, "replica-a")
	w.add(a)
	waitShares(t, []*replica{a}, []int{nShards}, 20*time.Second)
	// replica-a gives up its last shards first.
	key := keys()[nShards-1]
	ctx, done, ok := a.s.Hold(context.Background(), key)
	if !ok {
		t.Fatal("replica-a holds every shard but refuses a hold")
	}
	b := startReplica(t, cfg, ns, "replica-b")
	w.add(b)
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the work's context did not end when its shard was given up")
	}
	// The work goes on (it ignores its context): the shard stays with a.
	time.Sleep(time.Second)
	if b.s.Owns(key) {
		t.Fatal("replica-b took a shard whose work had not ended")
	}
	if _, _, ok := a.s.Hold(context.Background(), key); ok {
		t.Fatal("replica-a took a new hold on a shard it is giving up")
	}
	ended := time.Now()
	done()
	waitShares(t, []*replica{a, b}, []int{4, 4}, 20*time.Second)
	for !b.s.Owns(key) {
		if time.Since(ended) > 10*time.Second {
			t.Fatal("replica-b did not take the shard once its work had ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := a.s.Owner(key); got != "replica-b" && got != "" {
		t.Errorf("replica-a says the shard's owner is %q", got)
	}
}

func TestCheckSharding(t *testing.T) {
	ok := leader.Sharding{Namespace: "ns", Name: "x", Shards: 16, Durations: shardTimings, StepTimeout: time.Second}
	if err := leader.CheckSharding(ok); err != nil {
		t.Fatalf("CheckSharding(%+v) = %v", ok, err)
	}
	for name, mod := range map[string]func(*leader.Sharding){
		"no shards":                    func(s *leader.Sharding) { s.Shards = 0 },
		"retry not shorter than renew": func(s *leader.Sharding) { s.Durations.Retry = s.Durations.Renew },
		"renew and step reach the lease": func(s *leader.Sharding) {
			s.StepTimeout = s.Durations.Lease - s.Durations.Renew
		},
	} {
		s := ok
		mod(&s)
		if err := leader.CheckSharding(s); err == nil {
			t.Errorf("%s: CheckSharding(%+v) = nil", name, s)
		}
	}
}

func TestShardOfIsStable(t *testing.T) {
	// Pinned: the same on every replica and every release, or an upgrade
	// would move plans between replicas while old and new replicas run
	// side by side.
	for key, want := range map[string]int{"shop": 9, "group/payments": 10, "hal9-hierarchical": 9} {
		if got := leader.ShardOf(key, 16); got != want {
			t.Errorf("ShardOf(%q, 16) = %d, want %d", key, got, want)
		}
	}
	if got := leader.ShardOf("a", 1); got != 0 {
		t.Errorf("ShardOf(a, 1) = %d", got)
	}
}
