package leader

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	coordclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// Sharding shares work among replicas: a fixed number of shards, each a
// coordination.k8s.io Lease that one replica at a time holds, and a
// membership Lease per replica so that each sees the others and takes its
// fair share. A key (a plan's name, or its lockstep group's) maps to a
// shard by a stable hash, so every replica agrees on it without talking.
//
// The guarantee is that work on a shard's keys never runs on two replicas
// at once. A replica works on a shard only between a confirmed write of
// its Lease and that write's send time plus Renew, while another replica
// takes the Lease only once it has seen it unchanged for Lease; work in
// flight at the deadline has its context cancelled and ends within
// StepTimeout. Renew + StepTimeout < Lease (CheckSharding) makes the two
// windows disjoint. A Lease written with a stale version is refused by
// the API server, so two replicas never both win one.
type Sharding struct {
	// Namespace and Name place the Leases: NAME-member-IDENTITY for each
	// replica, NAME-shard-N for each shard.
	Namespace, Name string
	// Shards is how many shards there are; every replica must agree.
	Shards int
	// Durations are the Leases' timings, as in leader election.
	Durations Durations
	// StepTimeout bounds the work on a key once its context has ended
	// (the daemon's timeouts.step).
	StepTimeout time.Duration
}

// CheckSharding reports the first setting of s that cannot hold the
// guarantee.
func CheckSharding(s Sharding) error {
	d := s.Durations
	switch {
	case s.Shards < 1 || s.Shards > 1024:
		return fmt.Errorf("shards: %d is not within 1..1024", s.Shards)
	case d.Retry <= 0 || d.Renew <= 0 || d.Lease <= 0:
		return errors.New("leaseDuration, renewDeadline and retryPeriod must be positive durations")
	case d.Retry >= d.Renew:
		return fmt.Errorf("retryPeriod (%s) must be shorter than renewDeadline (%s): a shard is renewed every retryPeriod and given up after renewDeadline", d.Retry, d.Renew)
	case d.Renew+s.StepTimeout >= d.Lease:
		return fmt.Errorf("renewDeadline (%s) + timeouts.step (%s) must be shorter than leaseDuration (%s): a replica that stops renewing stops starting steps after renewDeadline and its last step ends within timeouts.step, before another replica may take the shard",
			d.Renew, s.StepTimeout, d.Lease)
	}
	return nil
}

// ShardOf is the shard of key among n: FNV-1a, so that every replica,
// every version and every restart agree.
func ShardOf(key string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// Labels on the Leases, so that one List reads them all.
const (
	labelSharding = "migrate.hal9.ai/sharding"
	labelRole     = "migrate.hal9.ai/role"
)

// Shards holds this replica's share of the shards. Create it with
// NewShards, start it with Run; Hold and Owns are safe to call from any
// goroutine.
type Shards struct {
	client   coordclient.LeasesGetter
	id       string
	cfg      Sharding
	log      *slog.Logger
	now      func() time.Time
	acquired func(shard int) // before work on the shard may start
	changed  func(held int)

	mu       sync.Mutex
	held     map[int]*holding
	seen     map[string]observation // each Lease as last read
	owners   map[int]string         // the holder of each shard as last read
	members  []string               // the live replicas as last read
	draining sync.WaitGroup
}

// holding is a shard this replica holds.
type holding struct {
	lease *coordinationv1.Lease // as last written by this replica
	// until is when work on the shard must stop unless a renewal is
	// confirmed: the send time of the last confirmed write plus Renew.
	until  time.Time
	acting bool
	// ctx ends when acting stops; holds derive from it.
	ctx    context.Context
	cancel context.CancelFunc
	timer  *time.Timer
	// inflight counts the holds taken; drained is closed when acting has
	// stopped and the last hold is given back.
	inflight  int
	drained   chan struct{}
	leaving   bool // given up by choice: released once drained
	releasing bool // being released: renewed no more
}

// observation is a Lease as this replica last read it, and when its
// version was first seen: a Lease is expired when it has not changed for
// its duration, as this replica's clock measures it (client-go's rule, so
// that no two clocks are compared).
type observation struct {
	version string
	holder  string
	at      time.Time
	dur     time.Duration
}

// ShardsOption configures NewShards.
type ShardsOption func(*Shards)

// WithShardsLogger reports shards acquired, released and lost.
func WithShardsLogger(l *slog.Logger) ShardsOption { return func(s *Shards) { s.log = l } }

// OnAcquired calls f with each shard acquired, before work on it may
// start: the daemon drops what it remembers of the shard's plans, since
// another replica may have moved them.
func OnAcquired(f func(shard int)) ShardsOption { return func(s *Shards) { s.acquired = f } }

// OnChanged calls f with the number of shards held after each change, once
// work on a new shard may start (the daemon wakes its plans; metrics).
func OnChanged(f func(held int)) ShardsOption { return func(s *Shards) { s.changed = f } }

// NewShards prepares identity's share of the shards s describes, on the
// API server cfg reaches.
func NewShards(cfg *rest.Config, identity string, s Sharding, opts ...ShardsOption) (*Shards, error) {
	if identity == "" {
		return nil, errors.New("sharding: empty identity")
	}
	if s.Namespace == "" || s.Name == "" {
		return nil, fmt.Errorf("sharding: the Leases need a namespace and a name (got %q/%q)", s.Namespace, s.Name)
	}
	if err := CheckSharding(s); err != nil {
		return nil, fmt.Errorf("sharding: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	// Renewals must not queue behind the client's rate limit, and must
	// give up well within the renew deadline.
	cfg.QPS, cfg.Burst = 50, 100
	if t := s.Durations.Renew / 2; cfg.Timeout == 0 || cfg.Timeout > t {
		cfg.Timeout = t
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("sharding: %w", err)
	}
	sh := &Shards{client: client.CoordinationV1(), id: identity, cfg: s, log: slog.New(slog.DiscardHandler), now: time.Now,
		held: map[int]*holding{}, seen: map[string]observation{}, owners: map[int]string{}}
	for _, o := range opts {
		o(sh)
	}
	return sh, nil
}

// Identity is this replica's name, as the Leases hold it.
func (s *Shards) Identity() string { return s.id }

// Count is the number of shards.
func (s *Shards) Count() int { return s.cfg.Shards }

// ShardOf is key's shard.
func (s *Shards) ShardOf(key string) int { return ShardOf(key, s.cfg.Shards) }

// Owns reports whether work on key may start on this replica now.
func (s *Shards) Owns(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[s.ShardOf(key)]
	return h != nil && h.acting && s.now().Before(h.until)
}

// Owner is the replica that holds key's shard as this one last saw it; ""
// when none does.
func (s *Shards) Owner(key string) string {
	i := s.ShardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.held[i]; h != nil && h.acting {
		return s.id
	}
	if s.owners[i] == s.id {
		return "" // given up or lost since last read: nobody works on it here
	}
	return s.owners[i]
}

// Held is the number of shards this replica works on.
func (s *Shards) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heldLocked()
}

func (s *Shards) heldLocked() int {
	n := 0
	for _, h := range s.held {
		if h.acting {
			n++
		}
	}
	return n
}

// Hold starts work on key: ok is false when this replica may not work on
// it now. Otherwise the work runs under the context returned, which ends
// when this replica must stop working on the shard, and calls done when
// it has ended; the shard is not given up before.
func (s *Shards) Hold(ctx context.Context, key string) (context.Context, func(), bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[s.ShardOf(key)]
	if h == nil || !h.acting || !s.now().Before(h.until) {
		return ctx, func() {}, false
	}
	h.inflight++
	hctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.ctx, cancel)
	var once sync.Once
	return hctx, func() {
		once.Do(func() {
			stop()
			cancel()
			s.mu.Lock()
			h.inflight--
			if !h.acting && h.inflight == 0 {
				close(h.drained)
			}
			s.mu.Unlock()
		})
	}, true
}

// Run keeps this replica's membership and share of the shards until ctx
// ends; then it stops working on its shards, waits for the work in flight
// and releases them, and its membership, so that the others take over at
// once.
func (s *Shards) Run(ctx context.Context) error {
	s.log.Info("sharding", "identity", s.id, "shards", s.cfg.Shards, "namespace", s.cfg.Namespace, "name", s.cfg.Name)
	// Renewals run on a loop of their own, so that they never wait
	// behind reading the Leases or taking shards.
	every := func(f func(context.Context)) {
		tick := time.NewTicker(s.cfg.Durations.Retry)
		defer tick.Stop()
		for {
			f(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}
	var loops sync.WaitGroup
	loops.Go(func() {
		every(func(ctx context.Context) {
			s.renewMember(ctx)
			s.renewShards(ctx)
		})
	})
	every(s.round)
	loops.Wait()
	s.shutdown()
	return ctx.Err()
}

// round reads every Lease, and takes or gives up shards to reach this
// replica's fair share.
func (s *Shards) round(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	list, err := s.client.Leases(s.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labelSharding + "=" + s.cfg.Name})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot read the shard leases", "err", err)
		}
		return
	}
	now := s.now()
	byName := map[string]*coordinationv1.Lease{}
	var members []string
	var gone []*coordinationv1.Lease
	s.mu.Lock()
	for i := range list.Items {
		l := &list.Items[i]
		byName[l.Name] = l
		o := s.observeLocked(l, now)
		if l.Labels[labelRole] != "member" {
			continue
		}
		if o.holder == s.id || o.holder != "" && now.Sub(o.at) < o.dur {
			members = append(members, o.holder)
		} else if now.Sub(o.at) >= 2*o.dur {
			gone = append(gone, l)
		}
	}
	if !slices.Contains(members, s.id) {
		members = append(members, s.id) // its own Lease may not be written yet
	}
	slices.Sort(members)
	members = slices.Compact(members)
	s.members = members
	for i := range s.cfg.Shards {
		o, ok := s.seen[s.shardLease(i)]
		switch {
		case !ok || o.holder == "" || now.Sub(o.at) >= o.dur:
			s.owners[i] = ""
		default:
			s.owners[i] = o.holder
		}
	}
	share := fairShare(s.cfg.Shards, members, s.id)
	var keep []int
	for i, h := range s.held {
		if h.acting && !h.leaving {
			keep = append(keep, i)
		}
	}
	slices.Sort(keep)
	// Too many: give up the last ones, once their work has ended.
	for len(keep) > share {
		i := keep[len(keep)-1]
		keep = keep[:len(keep)-1]
		s.leaveLocked(i)
	}
	need := share - len(keep)
	s.mu.Unlock()
	// The memberships of replicas long dead (killed, never stopped) are
	// deleted, as of the version seen, so that they do not pile up; a
	// replica only cut off makes its own again.
	for _, l := range gone {
		rv := l.ResourceVersion
		err := s.client.Leases(s.cfg.Namespace).Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err == nil {
			s.log.Info("deleted the membership of a replica gone", "lease", l.Name, "identity", ptr.Deref(l.Spec.HolderIdentity, ""))
		}
	}
	if need <= 0 {
		return
	}
	// Too few: take free or expired shards, starting at a place of this
	// replica's own so that replicas joining together try different ones.
	start := ShardOf(s.id, s.cfg.Shards)
	for k := range s.cfg.Shards {
		if need == 0 || ctx.Err() != nil {
			return
		}
		i := (start + k) % s.cfg.Shards
		s.mu.Lock()
		_, mine := s.held[i]
		o, seen := s.seen[s.shardLease(i)]
		s.mu.Unlock()
		if mine {
			continue
		}
		l := byName[s.shardLease(i)]
		free := l == nil || seen && (o.holder == "" || now.Sub(o.at) >= o.dur)
		if !free {
			continue
		}
		if s.acquire(ctx, i, l) {
			need--
		}
	}
}

// fairShare is how many of n shards the replica id takes among members
// (sorted, id among them): n divided evenly, the first ones by name taking
// one more each while some are left over.
func fairShare(n int, members []string, id string) int {
	k := len(members)
	idx, _ := slices.BinarySearch(members, id)
	share := n / k
	if idx < n%k {
		share++
	}
	return share
}

// observeLocked records l as read now, and returns its observation.
func (s *Shards) observeLocked(l *coordinationv1.Lease, now time.Time) observation {
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	dur := s.cfg.Durations.Lease
	if sec := ptr.Deref(l.Spec.LeaseDurationSeconds, 0); time.Duration(sec)*time.Second > dur {
		dur = time.Duration(sec) * time.Second
	}
	o, ok := s.seen[l.Name]
	if !ok || o.version != l.ResourceVersion {
		o = observation{version: l.ResourceVersion, holder: holder, at: now, dur: dur}
		s.seen[l.Name] = o
	}
	return o
}

func (s *Shards) shardLease(i int) string { return fmt.Sprintf("%s-shard-%d", s.cfg.Name, i) }

func (s *Shards) memberLease() string { return s.cfg.Name + "-member-" + leaseSuffix(s.id) }

// leaseSuffix makes identity part of a Lease's name: lowercase letters,
// digits and dashes, with a hash of the original when it had to change.
func leaseSuffix(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-.")
	if out != id || len(out) > 200 {
		h := fnv.New32a()
		h.Write([]byte(id))
		out = fmt.Sprintf("%.200s-%08x", out, h.Sum32())
	}
	return out
}

func (s *Shards) newLease(name, role string, shard int) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.cfg.Namespace,
		Labels: map[string]string{labelSharding: s.cfg.Name, labelRole: role}}}
	if role == "shard" {
		l.Labels["migrate.hal9.ai/shard"] = strconv.Itoa(shard)
	}
	return l
}

// stamp makes l held by this replica as of now.
func (s *Shards) stamp(l *coordinationv1.Lease, now time.Time, acquire bool) {
	t := metav1.NewMicroTime(now)
	l.Spec.HolderIdentity = ptr.To(s.id)
	l.Spec.LeaseDurationSeconds = ptr.To(int32((s.cfg.Durations.Lease + time.Second - 1) / time.Second))
	l.Spec.RenewTime = &t
	if acquire {
		l.Spec.AcquireTime = &t
		l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
	}
}

// renewMember writes this replica's membership Lease, making it if
// missing.
func (s *Shards) renewMember(ctx context.Context) {
	leases := s.client.Leases(s.cfg.Namespace)
	name := s.memberLease()
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		l = s.newLease(name, "member", 0)
		s.stamp(l, s.now(), true)
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
	case err == nil:
		s.stamp(l, s.now(), false)
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("cannot renew the membership lease", "lease", name, "err", err)
	}
}

// acquire takes shard i, whose Lease is l (nil: none yet), and starts
// work on it.
func (s *Shards) acquire(ctx context.Context, i int, l *coordinationv1.Lease) bool {
	leases := s.client.Leases(s.cfg.Namespace)
	sent := s.now()
	var got *coordinationv1.Lease
	var err error
	if l == nil {
		l = s.newLease(s.shardLease(i), "shard", i)
		s.stamp(l, sent, true)
		got, err = leases.Create(ctx, l, metav1.CreateOptions{})
	} else {
		l = l.DeepCopy()
		s.stamp(l, sent, true)
		got, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil {
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && ctx.Err() == nil {
			s.log.Warn("cannot take a shard", "shard", i, "err", err)
		}
		return false
	}
	until := sent.Add(s.cfg.Durations.Renew)
	if !s.now().Before(until) {
		return false // confirmed too late to work on; renewed next round
	}
	// What the daemon remembers of the shard's plans goes before any of
	// them is stepped.
	if s.acquired != nil {
		s.acquired(i)
	}
	hctx, cancel := context.WithCancel(context.Background())
	h := &holding{lease: got, until: until, acting: true, ctx: hctx, cancel: cancel, drained: make(chan struct{})}
	s.mu.Lock()
	// Said before the work may start, so that a log read in order never
	// shows work on the shard before it was taken.
	s.log.Info("shard acquired", "shard", i, "identity", s.id, "until", until.Format(time.RFC3339Nano), "held", s.heldLocked()+1)
	h.timer = time.AfterFunc(until.Sub(s.now()), func() { s.expire(i, h) })
	s.held[i] = h
	s.owners[i] = s.id
	s.seen[got.Name] = observation{version: got.ResourceVersion, holder: s.id, at: s.now(), dur: s.cfg.Durations.Lease}
	n := s.heldLocked()
	s.mu.Unlock()
	if s.changed != nil {
		s.changed(n)
	}
	return true
}

// renewShards renews every shard held, each within what is left of its
// deadline; a shard whose renewal is refused, or not confirmed in time,
// stops being worked on.
func (s *Shards) renewShards(ctx context.Context) {
	s.mu.Lock()
	type job struct {
		i int
		h *holding
	}
	var jobs []job
	for i, h := range s.held {
		jobs = append(jobs, job{i, h})
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { s.renew(ctx, j.i, j.h) })
	}
	wg.Wait()
}

func (s *Shards) renew(ctx context.Context, i int, h *holding) {
	s.mu.Lock()
	l := h.lease.DeepCopy()
	until, acting, releasing := h.until, h.acting, h.releasing
	s.mu.Unlock()
	if releasing {
		return
	}
	sent := s.now()
	if acting && !sent.Before(until) {
		s.lose(i, h, "the renewal came too late")
		return
	}
	if !acting {
		// Given up, its work still ending: renewed so that nobody takes
		// it meanwhile, whatever the deadline.
		until = sent.Add(s.cfg.Durations.Renew)
	}
	rctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	s.stamp(l, sent, false)
	got, err := s.client.Leases(s.cfg.Namespace).Update(rctx, l, metav1.UpdateOptions{})
	if err != nil {
		if apierrors.IsConflict(err) {
			// A write of this replica's whose answer was lost leaves it
			// the holder at a newer version: go on from that one (the
			// deadline stays that of the last write confirmed). Anyone
			// else wrote it only once it saw it expire, so the work has
			// stopped already: stop holding it.
			cur, gerr := s.client.Leases(s.cfg.Namespace).Get(rctx, l.Name, metav1.GetOptions{})
			if gerr == nil && ptr.Deref(cur.Spec.HolderIdentity, "") == s.id {
				s.mu.Lock()
				h.lease = cur
				s.mu.Unlock()
				return
			}
			s.lose(i, h, "the lease was taken: "+err.Error())
		} else if ctx.Err() == nil {
			s.log.Warn("cannot renew a shard", "shard", i, "err", err, "until", until.Format(time.RFC3339Nano))
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h.lease = got
	s.seen[got.Name] = observation{version: got.ResourceVersion, holder: s.id, at: s.now(), dur: s.cfg.Durations.Lease}
	if !h.acting || !s.now().Before(until) {
		return // stopped meanwhile: the work does not start again on this holding
	}
	h.until = sent.Add(s.cfg.Durations.Renew)
	h.timer.Reset(h.until.Sub(s.now()))
}

// expire stops work on shard i when its deadline has passed without a
// confirmed renewal.
func (s *Shards) expire(i int, h *holding) {
	s.mu.Lock()
	late := h.acting && !s.now().Before(h.until)
	s.mu.Unlock()
	if late {
		s.lose(i, h, "no renewal confirmed within renewDeadline")
	}
}

// lose stops work on shard i and forgets it once its work has ended,
// without writing its Lease: another replica takes it once it expires.
func (s *Shards) lose(i int, h *holding, why string) {
	s.mu.Lock()
	if s.held[i] != h {
		s.mu.Unlock()
		return
	}
	stopped := s.stopLocked(h)
	delete(s.held, i)
	n := s.heldLocked()
	s.mu.Unlock()
	if !stopped {
		return
	}
	s.log.Warn("shard lost; its work is stopped", "shard", i, "identity", s.id, "why", why)
	s.draining.Go(func() {
		s.waitDrained(i, h)
		s.log.Info("shard released", "shard", i, "identity", s.id, "lost", true, "held", n)
		if s.changed != nil {
			s.changed(n)
		}
	})
}

// stopLocked stops new work on h and cancels the work in flight; it
// reports whether h was acting.
func (s *Shards) stopLocked(h *holding) bool {
	if !h.acting {
		return false
	}
	h.acting = false
	h.timer.Stop()
	h.cancel()
	if h.inflight == 0 {
		close(h.drained)
	}
	return true
}

// waitDrained waits for the work in flight on h to end, warning if it
// outlives the bound the guarantee counts on.
func (s *Shards) waitDrained(i int, h *holding) {
	select {
	case <-h.drained:
	case <-time.After(s.cfg.StepTimeout):
		s.log.Error("work on a shard outlived timeouts.step after it was stopped", "shard", i, "identity", s.id)
		<-h.drained
	}
}

// leaveLocked gives shard i up: it stops the work on it, and once that
// has ended releases its Lease, renewing it meanwhile. It holds s.mu.
func (s *Shards) leaveLocked(i int) {
	h := s.held[i]
	h.leaving = true
	s.stopLocked(h)
	s.log.Info("giving a shard up", "shard", i, "identity", s.id)
	s.draining.Go(func() {
		s.waitDrained(i, h)
		s.release(i, h)
	})
}

// release writes shard i's Lease holder-less, if this replica still holds
// it, so that another takes it at once.
func (s *Shards) release(i int, h *holding) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Durations.Renew)
	defer cancel()
	s.mu.Lock()
	h.releasing = true
	l := h.lease.DeepCopy()
	n := s.heldLocked()
	s.mu.Unlock()
	// Said before the Lease is written, so that a log read in order never
	// shows the next holder taking it first.
	s.log.Info("shard released", "shard", i, "identity", s.id, "held", n)
	leases := s.client.Leases(s.cfg.Namespace)
	var err error
	for range 3 {
		l.Spec.HolderIdentity = nil
		l.Spec.LeaseDurationSeconds = ptr.To(int32(1))
		if _, err = leases.Update(ctx, l, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
			break
		}
		// A renewal under way wrote it meanwhile: again, on the newer
		// version, as long as this replica still holds it.
		cur, gerr := leases.Get(ctx, l.Name, metav1.GetOptions{})
		if gerr != nil || ptr.Deref(cur.Spec.HolderIdentity, "") != s.id {
			break
		}
		l = cur
	}
	s.mu.Lock()
	if s.held[i] == h {
		delete(s.held, i)
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("cannot release a shard; it expires instead", "shard", i, "err", err)
	}
	if s.changed != nil {
		s.changed(n)
	}
}

// shutdown gives every shard up, and the membership.
func (s *Shards) shutdown() {
	s.mu.Lock()
	for i, h := range s.held {
		if h.acting {
			s.leaveLocked(i)
		}
	}
	s.mu.Unlock()
	s.draining.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Durations.Renew)
	defer cancel()
	if err := s.client.Leases(s.cfg.Namespace).Delete(ctx, s.memberLease(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		s.log.Warn("cannot delete the membership lease", "err", err)
	}
}

// Members are the live replicas as last read, this one included.
func (s *Shards) Members() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.members)
}
