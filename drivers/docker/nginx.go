package docker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/internal/atomicfile"
)

// nginxRoute is a plan's nginx upstream and the files rendered for it.
//
// UPSTREAM.http.conf, included in nginx's http block, holds
//
//	upstream UPSTREAM { server ADDR weight=W; # stable NAME ... }
//	upstream UPSTREAM__hal9_mirror { server ADDR; # candidate NAME ... }
//	split_clients "${request_id}" $hal9_mirror_UPSTREAM { P% 1; * ""; }
//
// and UPSTREAM.server.conf, included in a server block, holds the mirror
// directive (while a share is mirrored) and the internal location the
// mirrored copies go through, which drops the ones split_clients leaves out.
// The user's location sends requests to the upstream:
//
//	http {
//	    include /etc/nginx/hal9/UPSTREAM.http.conf;
//	    server {
//	        listen 80;
//	        include /etc/nginx/hal9/UPSTREAM.server.conf;
//	        location / { proxy_pass http://UPSTREAM; }
//	    }
//	}
type nginxRoute struct {
	upstream string
	// container is the nginx container's name; empty when nginx runs on
	// the host.
	container string
	dir       string
}

func (r *nginxRoute) httpPath() string   { return filepath.Join(r.dir, r.upstream+".http.conf") }
func (r *nginxRoute) serverPath() string { return filepath.Join(r.dir, r.upstream+".server.conf") }

// ident is the upstream's name as a part of an nginx variable name.
func (r *nginxRoute) ident() string {
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			return c
		}
		return '_'
	}, r.upstream)
}

func (r *nginxRoute) mirrorUpstream() string { return r.upstream + "__hal9_mirror" }
func (r *nginxRoute) mirrorVar() string      { return "$hal9_mirror_" + r.ident() }
func (r *nginxRoute) mirrorURI() string      { return "/.hal9-mirror/" + r.upstream }

// backend is one server of the upstream.
type backend struct {
	role string // roleStable or roleCandidate
	name string // the container's name
	addr string // host:port
}

// split is the traffic and mirror shares.
type split struct{ traffic, mirror int }

// header marks the files as the driver's.
const header = "# Written by hal9-migrate for plan %s: every apply rewrites this file.\n"

// renderHTTP renders the http-level file: stable and candidate servers
// weighted so that the candidate gets traffic percent of the requests, the
// candidate's servers again as the mirror's upstream, and the mirrored share.
// Weights are exact: nginx's weighted round robin gives each server its
// weight's share in every cycle.
func (r *nginxRoute) renderHTTP(planName string, sp split, stable, cand []backend) (string, error) {
	if sp.traffic < 100 && len(stable) == 0 {
		return "", fmt.Errorf("stable has no running container to take %d%% of the traffic", 100-sp.traffic)
	}
	if sp.traffic > 0 && len(cand) == 0 {
		return "", fmt.Errorf("the candidate has no running container to take %d%% of the traffic", sp.traffic)
	}
	if sp.mirror > 0 && len(cand) == 0 {
		return "", fmt.Errorf("the candidate has no running container to take %d%% of the requests mirrored", sp.mirror)
	}
	// Each stable server gets (100-p)·|cand|, each candidate server
	// p·|stable|: the sides add up to (100-p) and p times the same factor.
	// At 0% and 100% only one side is written, with weight 1.
	ws, wc := 1, 1
	if sp.traffic > 0 && sp.traffic < 100 {
		ws, wc = (100-sp.traffic)*len(cand), sp.traffic*len(stable)
		g := gcd(ws, wc)
		ws, wc = ws/g, wc/g
	}
	var b strings.Builder
	fmt.Fprintf(&b, header, planName)
	fmt.Fprintf(&b, "# hal9-migrate: traffic=%d mirror=%d\n", sp.traffic, sp.mirror)
	fmt.Fprintf(&b, "upstream %s {\n", r.upstream)
	if sp.traffic < 100 {
		for _, s := range stable {
			fmt.Fprintf(&b, "    server %s weight=%d; # %s %s\n", s.addr, ws, roleStable, s.name)
		}
	}
	if sp.traffic > 0 {
		for _, c := range cand {
			fmt.Fprintf(&b, "    server %s weight=%d; # %s %s\n", c.addr, wc, roleCandidate, c.name)
		}
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "upstream %s {\n", r.mirrorUpstream())
	if len(cand) == 0 {
		// An upstream needs a server; this one is never used: no share
		// is mirrored without a candidate.
		b.WriteString("    server 127.0.0.1:9 down;\n")
	}
	for _, c := range cand {
		fmt.Fprintf(&b, "    server %s; # %s %s\n", c.addr, roleCandidate, c.name)
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "split_clients \"${request_id}\" %s {\n", r.mirrorVar())
	switch {
	case sp.mirror >= 100:
		b.WriteString("    * 1;\n")
	case sp.mirror > 0:
		fmt.Fprintf(&b, "    %d%% 1;\n    * \"\";\n", sp.mirror)
	default:
		b.WriteString("    * \"\";\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// renderServer renders the server-level file. The mirror directive is there
// only while a share is mirrored, so that nothing is copied otherwise.
func (r *nginxRoute) renderServer(planName string, sp split) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, planName)
	if sp.mirror > 0 {
		fmt.Fprintf(&b, "mirror %s;\nmirror_request_body on;\n", r.mirrorURI())
	}
	fmt.Fprintf(&b, `location = %s {
    internal;
    if (%s = "") {
        return 204;
    }
    proxy_pass http://%s$request_uri;
    proxy_set_header Host $host;
    proxy_set_header X-Hal9-Mirrored 1;
    proxy_connect_timeout 2s;
    proxy_read_timeout 30s;
}
`, r.mirrorURI(), r.mirrorVar(), r.mirrorUpstream())
	return b.String()
}

// rendered is what parseHTTP reads back from a rendered file.
type rendered struct {
	servers []weighted
	mirror  int
}

type weighted struct {
	backend
	weight int
}

// parseHTTP reads the weights and the mirrored share back from a file
// renderHTTP wrote.
func (r *nginxRoute) parseHTTP(content string) (rendered, error) {
	var out rendered
	block := ""
	sc := bufio.NewScanner(strings.NewReader(content))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		code, comment, _ := strings.Cut(text, "#")
		code = strings.TrimSpace(code)
		fields := strings.Fields(code)
		switch {
		case code == "":
		case code == "}":
			block = ""
		case strings.HasPrefix(code, "upstream ") && strings.HasSuffix(code, "{"):
			block = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(code, "upstream "), "{"))
		case strings.HasPrefix(code, "split_clients ") && strings.HasSuffix(code, "{"):
			block = "split_clients"
		case block == r.upstream && len(fields) >= 2 && fields[0] == "server":
			w := weighted{weight: 1}
			w.addr = strings.TrimSuffix(fields[1], ";")
			for _, f := range fields[2:] {
				if v, ok := strings.CutPrefix(strings.TrimSuffix(f, ";"), "weight="); ok {
					n, err := strconv.Atoi(v)
					if err != nil || n < 1 {
						return out, fmt.Errorf("line %d: weight %q", line, v)
					}
					w.weight = n
				}
			}
			c := strings.Fields(comment)
			if len(c) < 1 || c[0] != roleStable && c[0] != roleCandidate {
				return out, fmt.Errorf("line %d: server %s is not marked stable or candidate", line, w.addr)
			}
			w.role = c[0]
			if len(c) > 1 {
				w.name = c[1]
			}
			out.servers = append(out.servers, w)
		case block == "split_clients" && len(fields) == 2 && strings.HasSuffix(fields[0], "%"):
			if strings.Trim(fields[1], `";`) == "1" {
				p, err := strconv.ParseFloat(strings.TrimSuffix(fields[0], "%"), 64)
				if err != nil {
					return out, fmt.Errorf("line %d: share %q", line, fields[0])
				}
				out.mirror += int(math.Round(p))
			}
		case block == "split_clients" && len(fields) == 2 && fields[0] == "*":
			if strings.Trim(fields[1], `";`) == "1" {
				out.mirror = 100
			}
		}
	}
	return out, sc.Err()
}

// observe reads the split back from the rendered file. Servers whose
// address no longer belongs to a running container of their side (one that
// restarted with another address, or went) take nothing, so such drift shows
// as a split off its target and the next apply renders it again. Without a
// file, nothing reaches the candidate.
func (r *nginxRoute) observe(ws *workloads, addr func(member) (string, error)) (split, error) {
	content, err := os.ReadFile(r.httpPath())
	if errors.Is(err, fs.ErrNotExist) {
		return split{}, nil
	}
	if err != nil {
		return split{}, fmt.Errorf("read the nginx file: %w", err)
	}
	rd, err := r.parseHTTP(string(content))
	if err != nil {
		return split{}, fmt.Errorf("read the nginx file %s: %w", r.httpPath(), err)
	}
	live := map[string]string{} // address → side
	for _, w := range []*workload{ws.stable, ws.cand} {
		for _, m := range w.running() {
			if a, err := addr(m); err == nil {
				live[a] = w.sel.role
			}
		}
	}
	var total, cand int
	for _, s := range rd.servers {
		if live[s.addr] != s.role {
			continue
		}
		total += s.weight
		if s.role == roleCandidate {
			cand += s.weight
		}
	}
	sp := split{mirror: rd.mirror}
	if total > 0 {
		sp.traffic = int(math.Round(100 * float64(cand) / float64(total)))
	}
	return sp, nil
}

// backendAddr returns how nginx reaches a member: its address on a network
// it shares with the nginx container, or, for nginx on the host, the host
// address its port is published on.
func (d *Driver) backendAddr(router *member) func(member) (string, error) {
	return func(m member) (string, error) {
		port, err := appPort(m)
		if err != nil {
			return "", err
		}
		if m.info.NetworkSettings == nil {
			return "", fmt.Errorf("container %s has no network settings", m.name)
		}
		if router == nil {
			for _, b := range m.info.NetworkSettings.Ports[port] {
				if b.HostPort == "" {
					continue
				}
				ip := b.HostIP
				switch {
				case !ip.IsValid() || ip == netip.IPv4Unspecified():
					ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
				case ip == netip.IPv6Unspecified():
					ip = netip.IPv6Loopback()
				}
				return net.JoinHostPort(ip.String(), b.HostPort), nil
			}
			return "", fmt.Errorf("container %s publishes no host port for %s, which nginx on the host needs", m.name, port)
		}
		if router.info.NetworkSettings != nil {
			for _, name := range sortedKeys(router.info.NetworkSettings.Networks) {
				ep := m.info.NetworkSettings.Networks[name]
				if ep != nil && ep.IPAddress.IsValid() {
					return net.JoinHostPort(ep.IPAddress.String(), strconv.Itoa(int(port.Num()))), nil
				}
			}
		}
		return "", fmt.Errorf("container %s shares no network with the nginx container %s", m.name, router.name)
	}
}

// appPort is the container port requests go to: LabelPort, else the one TCP
// port the container exposes.
func appPort(m member) (network.Port, error) {
	if v := m.labels[LabelPort]; v != "" {
		if !strings.Contains(v, "/") {
			v += "/tcp"
		}
		p, err := network.ParsePort(v)
		if err != nil {
			return network.Port{}, fmt.Errorf("container %s: label %s=%q: %w", m.name, LabelPort, m.labels[LabelPort], err)
		}
		return p, nil
	}
	var tcp []network.Port
	if m.info.Config != nil {
		for p := range m.info.Config.ExposedPorts {
			if p.Proto() == network.TCP {
				tcp = append(tcp, p)
			}
		}
	}
	if len(tcp) != 1 {
		return network.Port{}, fmt.Errorf("container %s exposes %d TCP ports: label it %s=PORT to say which one takes requests", m.name, len(tcp), LabelPort)
	}
	return tcp[0], nil
}

// route renders the split for stable and cand, checks it, swaps it in and
// reloads nginx.
func (d *Driver) route(ctx context.Context, ws *workloads, t drivers.Target, stable, cand []member) error {
	sb, err := d.backendsOf(ws, stable, roleStable)
	if err != nil {
		return err
	}
	cb, err := d.backendsOf(ws, cand, roleCandidate)
	if err != nil {
		return err
	}
	sp := split{traffic: t.Traffic, mirror: t.Mirror}
	httpConf, err := d.nginx.renderHTTP(d.plan, sp, sb, cb)
	if err != nil {
		return err
	}
	return d.swap(ctx, ws.router, httpConf, d.nginx.renderServer(d.plan, sp), false)
}

// renderInitial renders all traffic to stable when no file exists yet, so
// that an nginx configuration that includes the files can start. With nginx
// in a container that is not running, the files are written unchecked: that
// nginx checks them as it starts.
func (d *Driver) renderInitial(ctx context.Context) error {
	if _, err := os.Stat(d.nginx.httpPath()); err == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ws, err := d.load(ctx)
	if err != nil {
		return err
	}
	if d.nginx.container != "" && (ws.router == nil || !ws.router.running) {
		sb, err := d.backendsOf(ws, ws.stable.running(), roleStable)
		if err != nil {
			return err
		}
		httpConf, err := d.nginx.renderHTTP(d.plan, split{}, sb, nil)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(d.nginx.serverPath(), []byte(d.nginx.renderServer(d.plan, split{})), 0o644); err != nil {
			return err
		}
		return atomicfile.Write(d.nginx.httpPath(), []byte(httpConf), 0o644)
	}
	sb, err := d.backendsOf(ws, ws.stable.running(), roleStable)
	if err != nil {
		return err
	}
	httpConf, err := d.nginx.renderHTTP(d.plan, split{}, sb, nil)
	if err != nil {
		return err
	}
	return d.swap(ctx, ws.router, httpConf, d.nginx.renderServer(d.plan, split{}), true)
}

func (d *Driver) backendsOf(ws *workloads, ms []member, role string) ([]backend, error) {
	addr := d.backendAddr(ws.router)
	var out []backend
	for _, m := range ms {
		a, err := addr(m)
		if err != nil {
			return nil, err
		}
		out = append(out, backend{role: role, name: m.name, addr: a})
	}
	return out, nil
}

// swap checks the new files on their own with `nginx -t`, renames them over
// the old ones, checks nginx's whole configuration and puts the old files
// back if it fails, then reloads nginx, putting the old files back if the
// reload fails, so that nginx never finds files it did not take. Nginx on
// the host not running is not such a failure: the checked files stay, for
// it to read when it starts, and the error says to start it. The first
// files (initial) may find nginx on the host not started yet, waiting for
// them: a failed reload is then only logged.
func (d *Driver) swap(ctx context.Context, router *member, httpConf, serverConf string, initial bool) error {
	r := d.nginx
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("nginx folder: %w", err)
	}
	oldHTTP, errH := os.ReadFile(r.httpPath())
	oldServer, errS := os.ReadFile(r.serverPath())
	same := errH == nil && errS == nil && string(oldHTTP) == httpConf && string(oldServer) == serverConf
	if same && !d.unloaded {
		return nil // nothing to change: no reload either
	}
	if same {
		// The files are as wanted, but nginx may have started on the
		// ones before them: reload, and nothing else.
		return d.reloadHost(ctx, initial, nil)
	}

	next := func(p string) string { return filepath.Join(r.dir, "."+filepath.Base(p)+".next") }
	check := filepath.Join(r.dir, "."+r.upstream+".check.conf")
	defer os.Remove(next(r.httpPath()))
	defer os.Remove(next(r.serverPath()))
	defer os.Remove(check)
	if err := atomicfile.Write(next(r.httpPath()), []byte(httpConf), 0o644); err != nil {
		return fmt.Errorf("write the nginx file: %w", err)
	}
	if err := atomicfile.Write(next(r.serverPath()), []byte(serverConf), 0o644); err != nil {
		return fmt.Errorf("write the nginx file: %w", err)
	}
	seen := d.routerPath(router)
	wrapper := fmt.Sprintf(`# hal9-migrate checks %s's new files on their own with this file.
error_log stderr;
events {}
http {
    include %s;
    server {
        listen 127.0.0.1:9;
        include %s;
        location / { proxy_pass http://%s; }
    }
}
`, r.upstream, seen(next(r.httpPath())), seen(next(r.serverPath())), r.upstream)
	if err := atomicfile.Write(check, []byte(wrapper), 0o644); err != nil {
		return fmt.Errorf("write the nginx file: %w", err)
	}
	if out, err := d.nginxRun(ctx, router, d.nginxCommand(router, "-t", "-q", "-c", seen(check))); err != nil {
		return fmt.Errorf("the new nginx files do not pass nginx -t: %w: %s", err, out)
	}

	if err := os.Rename(next(r.serverPath()), r.serverPath()); err != nil {
		return fmt.Errorf("swap in the nginx file: %w", err)
	}
	if err := os.Rename(next(r.httpPath()), r.httpPath()); err != nil {
		return fmt.Errorf("swap in the nginx file: %w", err)
	}
	restore := func(cause error) error {
		put := func(p string, old []byte, had error) {
			if had == nil {
				_ = atomicfile.Write(p, old, 0o644)
			} else {
				_ = os.Remove(p)
			}
		}
		put(r.httpPath(), oldHTTP, errH)
		put(r.serverPath(), oldServer, errS)
		return cause
	}
	full := d.opts.NginxTest
	if router != nil {
		full = d.nginxCommand(router, "-t", "-q")
	}
	if len(full) > 0 {
		if out, err := d.nginxRun(ctx, router, full); err != nil {
			return restore(fmt.Errorf("nginx -t fails with the new files, the old ones are back: %w: %s", err, out))
		}
	}
	if router != nil {
		if _, err := d.cli.ContainerKill(ctx, router.id, client.ContainerKillOptions{Signal: "HUP"}); err != nil {
			return fmt.Errorf("reload nginx in %s: %w", router.name, err)
		}
		d.opts.Log.Info("nginx reloaded", "plan", d.plan, "upstream", r.upstream)
		return nil
	}
	return d.reloadHost(ctx, initial, restore)
}

// reloadHost reloads nginx on the host. When it is not running the files,
// which passed nginx -t, stay for it to read as it starts; since it may be
// starting on the ones before them just then, the next swap reloads
// again. Another failure puts the old files back with restore (nil: the
// files did not change). Like swap, it runs under d.mu.
func (d *Driver) reloadHost(ctx context.Context, initial bool, restore func(error) error) error {
	r := d.nginx
	out, err := d.nginxRun(ctx, nil, d.opts.NginxReload)
	// The first files of all cannot have been read before: nginx cannot
	// start without them.
	d.unloaded = err != nil && hostNginxDown(out) && !initial
	if err == nil {
		d.opts.Log.Info("nginx reloaded", "plan", d.plan, "upstream", r.upstream)
		return nil
	}
	switch {
	case hostNginxDown(out):
		if initial {
			d.opts.Log.Warn("nginx on the host is not running yet: it reads the files when it starts", "plan", d.plan, "dir", r.dir)
			return nil
		}
		return fmt.Errorf("nginx on the host is not running (%s): start it (for example `systemctl start nginx`, or the nginx command with the configuration that includes %s); the new files are written and it reads them as it starts", lastLine(out), r.dir)
	case initial:
		d.opts.Log.Warn("nginx did not reload: it reads the files when it starts", "plan", d.plan, "err", err, "output", out)
		return nil
	case restore == nil:
		return fmt.Errorf("reload nginx failed: %w: %s", err, out)
	}
	return restore(fmt.Errorf("reload nginx failed, the old files are back: %w: %s", err, out))
}

// nginxCommand is nginx with args, on the host or in the router.
func (d *Driver) nginxCommand(router *member, args ...string) []string {
	return append([]string{d.opts.NginxBinary}, args...)
}

// routerPath maps a path under NginxDir to the path nginx sees.
func (d *Driver) routerPath(router *member) func(string) string {
	if router == nil {
		return func(p string) string { return p }
	}
	dir := d.opts.NginxRouterDir
	if dir == "" {
		// The router's mount of NginxDir or of a folder above it; the
		// deepest one wins. None (the daemon in a container sharing a
		// volume, say): the same path.
		dir = d.nginx.dir
		best := -1
		for _, mnt := range router.info.Mounts {
			rel, err := filepath.Rel(filepath.Clean(mnt.Source), filepath.Clean(d.nginx.dir))
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || len(mnt.Source) <= best {
				continue
			}
			dir, best = filepath.Join(mnt.Destination, rel), len(mnt.Source)
		}
	}
	return func(p string) string {
		rel, err := filepath.Rel(d.nginx.dir, p)
		if err != nil {
			return p
		}
		return filepath.ToSlash(filepath.Join(dir, rel))
	}
}

// nginxRun runs cmd on the host, or in the router container, and returns
// its output; a non-zero exit is an error.
func (d *Driver) nginxRun(ctx context.Context, router *member, cmd []string) (string, error) {
	if router == nil {
		c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
		out, err := c.CombinedOutput()
		if ctx.Err() != nil {
			return string(out), ctx.Err()
		}
		return strings.TrimSpace(string(out)), err
	}
	ex, err := d.cli.ExecCreate(ctx, router.id, client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", fmt.Errorf("exec in %s: %w", router.name, err)
	}
	att, err := d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return "", fmt.Errorf("exec in %s: %w", router.name, err)
	}
	defer att.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			att.Close()
		case <-done:
		}
	}()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, att.Reader); err != nil && ctx.Err() == nil {
		return out.String(), fmt.Errorf("exec in %s: %w", router.name, err)
	}
	if err := ctx.Err(); err != nil {
		return out.String(), err
	}
	st, err := d.cli.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		return out.String(), fmt.Errorf("exec in %s: %w", router.name, err)
	}
	if st.ExitCode != 0 {
		return strings.TrimSpace(out.String()), fmt.Errorf("%s exited with code %d", strings.Join(cmd, " "), st.ExitCode)
	}
	return strings.TrimSpace(out.String()), nil
}

// hostNginxDown reports whether the output of `nginx -s reload` says no
// nginx runs to reload: its pid file is missing or empty, or names no
// process.
func hostNginxDown(out string) bool {
	return strings.Contains(out, "invalid PID number") ||
		strings.Contains(out, ".pid\" failed (2:") ||
		strings.Contains(out, "failed (3: No such process)")
}

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
