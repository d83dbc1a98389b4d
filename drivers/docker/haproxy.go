package docker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// haproxyRouter carries a plan's split as the weights of the servers of an
// HAProxy backend, which it adds, changes and removes through HAProxy's
// runtime API: no file is written and HAProxy never reloads.
//
// The backend is the user's, declared with no servers and a dynamic balance
// algorithm (roundrobin, the default), and HAProxy runs on the host with an
// admin-level runtime API the daemon's Options.HAProxyRuntimeAPI names:
//
//	global
//	    stats socket /run/haproxy/admin.sock level admin
//	frontend web
//	    bind :80
//	    default_backend BACKEND
//	backend BACKEND
//	    balance roundrobin
//
// Each running container of either side is one server, named
// "stable_CONTAINER" or "candidate_CONTAINER", at the host address its port
// is published on; a side that takes none of the traffic keeps its servers
// at weight 0. A server whose container went is put in maintenance, so that
// it takes no new request, and deleted once HAProxy holds no connection to
// it (HAProxy refuses before; the next Route tries again).
type haproxyRouter struct {
	backend string
	api     runtimeAPI
	d       *Driver
}

var _ router = (*haproxyRouter)(nil)

// haproxyName is what a backend or server name may be here: HAProxy's own
// rule, which also keeps a name from ending or chaining a runtime command.
var haproxyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)

// openHAProxy returns the router of d's plan through the HAProxy backend t
// names, at the runtime API address of d's options.
func openHAProxy(d *Driver, t plan.DockerTraffic) (router, error) {
	if !haproxyName.MatchString(t.HAProxy.Backend) {
		return nil, fmt.Errorf("plan %s: haproxy backend %q: want letters, digits, '_', '.', ':' and '-'", d.plan, t.HAProxy.Backend)
	}
	if d.opts.HAProxyRuntimeAPI == "" {
		return nil, fmt.Errorf("plan %s routes through HAProxy, but the daemon has no HAProxy runtime API address configured", d.plan)
	}
	api, err := parseRuntimeAPI(d.opts.HAProxyRuntimeAPI)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", d.plan, err)
	}
	return &haproxyRouter{backend: t.HAProxy.Backend, api: api, d: d}, nil
}

// claims keeps two plans of the engine from driving one backend.
func (r *haproxyRouter) claims() []string {
	return []string{"HAProxy backend " + r.backend + " at " + r.api.address}
}

// Check refuses a mirrored share: HAProxy cannot copy requests.
func (r *haproxyRouter) Check(_ *workloads, sp traffic.Split) error {
	if sp.Mirror > 0 {
		return fmt.Errorf("HAProxy backend %s cannot mirror %d%% of the requests: %w (use traffic.nginx for a mirror phase)", r.backend, sp.Mirror, traffic.ErrCannotMirror)
	}
	return nil
}

// Observe reads the servers' weights back from HAProxy. Servers in
// maintenance, and servers whose address is no longer a running container
// of their side (one that restarted elsewhere, or went), take nothing.
func (r *haproxyRouter) Observe(ctx context.Context, w *workloads) (traffic.Split, error) {
	servers, err := r.servers(ctx)
	if err != nil {
		return traffic.Split{}, err
	}
	return haproxyShare(servers, r.d.liveAddrs(w)), nil
}

// Route makes the backend's servers the running containers of both sides,
// weighted for sp, with one runtime command per change: new servers and new
// weights first, then the servers of containers that went, so that no
// request finds the backend empty.
func (r *haproxyRouter) Route(ctx context.Context, w *workloads, sp traffic.Split) error {
	if err := r.Check(w, sp); err != nil {
		return err
	}
	want, err := r.want(w, sp.Traffic)
	if err != nil {
		return err
	}
	have, err := r.servers(ctx)
	if err != nil {
		return err
	}
	cmds, err := haproxyCommands(r.backend, have, want)
	if err != nil {
		return err
	}
	for _, c := range cmds {
		answer, err := r.api.do(ctx, c.line)
		if err != nil {
			return err
		}
		if !c.succeeded(answer) {
			return fmt.Errorf("HAProxy's runtime API at %s refused %q: %s", r.api, c.line, quoteAnswer(answer))
		}
	}
	return nil
}

// servers reads the backend's servers.
func (r *haproxyRouter) servers(ctx context.Context) ([]haproxyServer, error) {
	answer, err := r.api.do(ctx, "show servers state "+r.backend)
	if err != nil {
		return nil, err
	}
	servers, err := parseServersState(answer, r.backend)
	if err != nil {
		return nil, fmt.Errorf("HAProxy's runtime API at %s, show servers state %s: %w", r.api, r.backend, err)
	}
	return servers, nil
}

// want is the servers the backend should have for traffic percent to the
// candidate.
func (r *haproxyRouter) want(w *workloads, percent int) ([]haproxyServer, error) {
	stable, cand := w.stable.running(), w.cand.running()
	if percent < 100 && len(stable) == 0 {
		return nil, fmt.Errorf("stable has no running container to take %d%% of the traffic", 100-percent)
	}
	if percent > 0 && len(cand) == 0 {
		return nil, fmt.Errorf("the candidate has no running container to take %d%% of the traffic", percent)
	}
	ws, wc, err := haproxyWeights(percent, len(stable), len(cand))
	if err != nil {
		return nil, fmt.Errorf("HAProxy backend %s: %w", r.backend, err)
	}
	sb, err := r.d.backendsOf(w, stable, roleStable)
	if err != nil {
		return nil, err
	}
	cb, err := r.d.backendsOf(w, cand, roleCandidate)
	if err != nil {
		return nil, err
	}
	var out []haproxyServer
	for _, side := range []struct {
		backends []backend
		weights  []int
	}{{sb, ws}, {cb, wc}} {
		for i, b := range side.backends {
			s := haproxyServer{name: b.role + "_" + b.name, role: b.role, addr: b.addr, weight: side.weights[i]}
			if !haproxyName.MatchString(s.name) {
				return nil, fmt.Errorf("container %s: its name cannot name an HAProxy server", b.name)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// haproxyServer is one server of the backend, as HAProxy reports it or as
// Route wants it.
type haproxyServer struct {
	name string
	// role is the side its name says: roleStable, roleCandidate, or ""
	// for a server the driver did not add.
	role   string
	addr   string // host:port
	weight int
	// maint is set while the server is in maintenance: it takes nothing.
	maint bool
}

// haproxyMaxWeight is the largest weight HAProxy takes.
const haproxyMaxWeight = 256

// haproxyWeights returns the weight of each of ns stable and nc candidate
// servers so that the candidate's get percent of the requests: exactly when
// HAProxy's weights (at most 256) can, else as near as they can with the
// share, rounded, still percent. The servers of a side share its weight
// evenly, unless the weights cannot give a small share over all of them:
// then as many of that side as can take it, the others get 0 (1% over four
// candidate servers is three of them at 1 against 256). At 0% and 100% the
// side taking nothing gets weight 0.
func haproxyWeights(percent, ns, nc int) (stable, cand []int, err error) {
	fill := func(n, k, w int) []int {
		out := make([]int, n)
		for i := range k {
			out[i] = w
		}
		return out
	}
	switch {
	case percent <= 0:
		return fill(ns, ns, 1), fill(nc, 0, 0), nil
	case percent >= 100:
		return fill(ns, 0, 0), fill(nc, nc, 1), nil
	}
	ks, kc := ns, nc
	for {
		if ws, wc, ok := evenWeights(percent, ks, kc); ok {
			return fill(ns, ks, ws), fill(nc, kc, wc), nil
		}
		switch {
		case percent < 50 && kc > 1:
			kc--
		case percent >= 50 && ks > 1:
			ks--
		default:
			return nil, nil, fmt.Errorf("weights of 1..%d cannot give %d%% to %d candidate servers against %d stable ones", haproxyMaxWeight, percent, nc, ns)
		}
	}
}

// evenWeights returns the weight of each of ns stable and nc candidate
// servers, all of a side alike, nearest to giving the candidate percent,
// 1..99; ok is false when no weights of 1..256 round to percent.
func evenWeights(percent, ns, nc int) (ws, wc int, ok bool) {
	best := math.Inf(1)
	for s := 1; s <= haproxyMaxWeight; s++ {
		c := int(math.Round(float64(s*percent*ns) / float64((100-percent)*nc)))
		if c < 1 || c > haproxyMaxWeight || traffic.Share(c*nc, s*ns+c*nc) != percent {
			continue
		}
		if d := math.Abs(100*float64(c*nc)/float64(s*ns+c*nc) - float64(percent)); d < best {
			best, ws, wc = d, s, c
		}
	}
	return ws, wc, wc > 0
}

// haproxyShare is the candidate's share of the weight of the servers that
// take requests: not in maintenance, and at the address of a running
// container of their side (live maps address to side).
func haproxyShare(servers []haproxyServer, live map[string]string) traffic.Split {
	var total, cand int
	for _, s := range servers {
		if s.maint || s.role == "" || live[s.addr] != s.role {
			continue
		}
		total += s.weight
		if s.role == roleCandidate {
			cand += s.weight
		}
	}
	return traffic.Split{Traffic: traffic.Share(cand, total)}
}

// haproxyCommand is one runtime API command and the answers that mean it
// did what it was sent for.
type haproxyCommand struct {
	line string
	// ok are the prefixes of an answer that means success; none: the
	// answer must be empty.
	ok []string
}

func (c haproxyCommand) succeeded(answer string) bool {
	a := strings.TrimSpace(answer)
	if len(c.ok) == 0 {
		return a == ""
	}
	return slices.ContainsFunc(c.ok, func(p string) bool { return strings.HasPrefix(a, p) })
}

// haproxyCommands returns the runtime commands that take backend from have
// to want: servers added (in maintenance, as HAProxy adds them) and enabled,
// addresses and weights set, then the servers not wanted put in maintenance
// and deleted. A server the driver did not add is an error: its share would
// be out of the driver's hands.
func haproxyCommands(backend string, have, want []haproxyServer) ([]haproxyCommand, error) {
	byName := map[string]haproxyServer{}
	for _, s := range have {
		if s.role == "" {
			return nil, fmt.Errorf("HAProxy backend %s has the server %s, which the driver did not add: declare the backend with no servers, the driver adds them", backend, s.name)
		}
		byName[s.name] = s
	}
	var cmds []haproxyCommand
	add := func(ok []string, format string, args ...any) {
		cmds = append(cmds, haproxyCommand{line: fmt.Sprintf(format, args...), ok: ok})
	}
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[w.name] = true
		srv := backend + "/" + w.name
		h, ok := byName[w.name]
		if !ok {
			add([]string{"New server registered."}, "add server %s %s weight %d", srv, w.addr, w.weight)
			add(nil, "enable server %s", srv)
			continue
		}
		if h.addr != w.addr {
			host, port, err := net.SplitHostPort(w.addr)
			if err != nil {
				return nil, fmt.Errorf("server %s: address %q: %w", w.name, w.addr, err)
			}
			add([]string{"IP changed", "no need to change"}, "set server %s addr %s port %s", srv, host, port)
		}
		if h.weight != w.weight {
			add(nil, "set weight %s %d", srv, w.weight)
		}
		if h.maint {
			add(nil, "enable server %s", srv)
		}
	}
	for _, h := range have {
		if wanted[h.name] {
			continue
		}
		srv := backend + "/" + h.name
		if !h.maint {
			add(nil, "disable server %s", srv)
		}
		// HAProxy keeps a server it still has connections to: it stays
		// in maintenance, taking nothing, until the next Route.
		add([]string{"Server deleted.", "Server still has connections attached to it"}, "del server %s", srv)
	}
	return cmds, nil
}

// Limits on what is read of the runtime API's answers.
const (
	// haproxyMaxAnswer bounds an answer: "show servers state" of a
	// backend of some thousand servers.
	haproxyMaxAnswer = 1 << 20
	// haproxyMaxFields bounds the columns of a server's line.
	haproxyMaxFields = 64
)

// Admin state flags of "show servers state" that put a server in
// maintenance: forced, inherited, from the configuration, from a failed
// name resolution.
const haproxyAdminMaint = 0x01 | 0x02 | 0x04 | 0x20

// parseServersState reads the answer to "show servers state BACKEND": a
// version line ("1"), a "# " line naming the columns, and a line per server.
// Lines of another backend are skipped. Servers named "stable_…" or
// "candidate_…" are the driver's, of that side.
func parseServersState(answer, backend string) ([]haproxyServer, error) {
	sc := bufio.NewScanner(strings.NewReader(answer))
	sc.Buffer(make([]byte, 0, 4096), haproxyMaxAnswer)
	var cols map[string]int
	ncols := 0
	var out []haproxyServer
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		switch {
		case line == 1:
			if text != "1" {
				return nil, fmt.Errorf("want the state format 1, HAProxy answered %s", quoteAnswer(answer))
			}
			continue
		case text == "":
			continue
		case cols == nil:
			h, ok := strings.CutPrefix(text, "#")
			if !ok {
				return nil, fmt.Errorf("line %d: want the column names, got %s", line, quoteAnswer(text))
			}
			names := strings.Fields(h)
			if len(names) > haproxyMaxFields {
				return nil, fmt.Errorf("line %d: %d columns, more than %d", line, len(names), haproxyMaxFields)
			}
			cols, ncols = map[string]int{}, len(names)
			for i, n := range names {
				cols[n] = i
			}
			for _, n := range []string{"be_name", "srv_name", "srv_addr", "srv_port", "srv_admin_state", "srv_uweight"} {
				if _, ok := cols[n]; !ok {
					return nil, fmt.Errorf("line %d: no column %s", line, n)
				}
			}
			continue
		}
		f := strings.Fields(text)
		if len(f) != ncols {
			return nil, fmt.Errorf("line %d: %d columns, want %d", line, len(f), ncols)
		}
		if f[cols["be_name"]] != backend {
			continue
		}
		s, err := parseServer(f, cols)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cols == nil {
		return nil, fmt.Errorf("no column names in HAProxy's answer %s", quoteAnswer(answer))
	}
	return out, nil
}

// parseServer reads one server's line, split into fields.
func parseServer(f []string, cols map[string]int) (haproxyServer, error) {
	s := haproxyServer{name: f[cols["srv_name"]]}
	if !haproxyName.MatchString(s.name) {
		return s, fmt.Errorf("server name %q", s.name)
	}
	for _, role := range []string{roleStable, roleCandidate} {
		if strings.HasPrefix(s.name, role+"_") {
			s.role = role
		}
	}
	ip, err := netip.ParseAddr(f[cols["srv_addr"]])
	if err != nil {
		return s, fmt.Errorf("server %s: address %q", s.name, f[cols["srv_addr"]])
	}
	port, err := strconv.ParseUint(f[cols["srv_port"]], 10, 16)
	if err != nil {
		return s, fmt.Errorf("server %s: port %q", s.name, f[cols["srv_port"]])
	}
	s.addr = netip.AddrPortFrom(ip, uint16(port)).String()
	admin, err := strconv.ParseUint(f[cols["srv_admin_state"]], 10, 16)
	if err != nil {
		return s, fmt.Errorf("server %s: admin state %q", s.name, f[cols["srv_admin_state"]])
	}
	s.maint = admin&haproxyAdminMaint != 0
	weight, err := strconv.Atoi(f[cols["srv_uweight"]])
	if err != nil || weight < 0 || weight > haproxyMaxWeight {
		return s, fmt.Errorf("server %s: weight %q", s.name, f[cols["srv_uweight"]])
	}
	s.weight = weight
	return s, nil
}

// quoteAnswer quotes an answer of HAProxy for an error, cut short.
func quoteAnswer(answer string) string {
	a := strings.TrimSpace(answer)
	if len(a) > 200 {
		a = a[:200] + "…"
	}
	return strconv.Quote(a)
}

// runtimeAPI is HAProxy's runtime API at one address: a unix socket, or a
// TCP port on the loopback interface (the API has no authentication of its
// own: the daemon reaches it on this machine only).
type runtimeAPI struct {
	network, address string
}

// haproxyCallTimeout bounds one runtime API call, from dialling to the end
// of the answer, within the caller's own deadline.
const haproxyCallTimeout = 5 * time.Second

// parseRuntimeAPI reads an address: an absolute socket path, or a loopback
// HOST:PORT.
func parseRuntimeAPI(address string) (runtimeAPI, error) {
	if strings.HasPrefix(address, "/") {
		return runtimeAPI{"unix", address}, nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().IsLoopback() {
		return runtimeAPI{}, fmt.Errorf("HAProxy runtime API %q: want a socket path or a loopback address such as 127.0.0.1:9999", address)
	}
	return runtimeAPI{"tcp", address}, nil
}

func (a runtimeAPI) String() string { return a.address }

// do sends one command and returns HAProxy's answer: HAProxy closes the
// connection once it has answered. The call ends within haproxyCallTimeout
// and ctx; an answer of more than haproxyMaxAnswer bytes is an error.
func (a runtimeAPI) do(ctx context.Context, cmd string) (string, error) {
	if strings.ContainsAny(cmd, ";\n\r") {
		return "", fmt.Errorf("runtime API command %q: one command per call", cmd)
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, haproxyCallTimeout)
	defer cancel()
	fail := func(what string, err error) (string, error) {
		if cerr := parent.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return "", fmt.Errorf("HAProxy's runtime API at %s: %s %q: %w", a, what, cmd, err)
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, a.network, a.address)
	if err != nil {
		return fail("connect to send", err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return fail("send", err)
	}
	// A cancelled ctx ends a call that waits on HAProxy at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return fail("send", err)
	}
	b, err := io.ReadAll(io.LimitReader(conn, haproxyMaxAnswer+1))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return fail("read the answer to", err)
	}
	if len(b) > haproxyMaxAnswer {
		return fail("read the answer to", fmt.Errorf("the answer is longer than %d bytes", haproxyMaxAnswer))
	}
	return string(b), nil
}
