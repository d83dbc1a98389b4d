package docker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/internal/atomicfile"
	"github.com/hal9ai/hal9-migrate/plan"
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

// header marks the files as the driver's.
const header = "# Written by hal9-migrate for plan %s: every apply rewrites this file.\n"

// renderHTTP renders the http-level file: stable and candidate servers
// weighted so that the candidate gets traffic percent of the requests, the
// candidate's servers again as the mirror's upstream, and the mirrored share.
// Weights are exact: nginx's weighted round robin gives each server its
// weight's share in every cycle.
func (r *nginxRoute) renderHTTP(planName string, sp traffic.Split, stable, cand []backend) (string, error) {
	if sp.Traffic < 100 && len(stable) == 0 {
		return "", fmt.Errorf("stable has no running container to take %d%% of the traffic", 100-sp.Traffic)
	}
	if sp.Traffic > 0 && len(cand) == 0 {
		return "", fmt.Errorf("the candidate has no running container to take %d%% of the traffic", sp.Traffic)
	}
	if sp.Mirror > 0 && len(cand) == 0 {
		return "", fmt.Errorf("the candidate has no running container to take %d%% of the requests mirrored", sp.Mirror)
	}
	// Each stable server gets (100-p)·|cand|, each candidate server
	// p·|stable|: the sides add up to (100-p) and p times the same factor.
	// At 0% and 100% only one side is written, with weight 1.
	ws, wc := 1, 1
	if sp.Traffic > 0 && sp.Traffic < 100 {
		ws, wc = (100-sp.Traffic)*len(cand), sp.Traffic*len(stable)
		g := gcd(ws, wc)
		ws, wc = ws/g, wc/g
	}
	var b strings.Builder
	fmt.Fprintf(&b, header, planName)
	fmt.Fprintf(&b, "# hal9-migrate: traffic=%d mirror=%d\n", sp.Traffic, sp.Mirror)
	fmt.Fprintf(&b, "upstream %s {\n", r.upstream)
	if sp.Traffic < 100 {
		for _, s := range stable {
			fmt.Fprintf(&b, "    server %s weight=%d; # %s %s\n", s.addr, ws, roleStable, s.name)
		}
	}
	if sp.Traffic > 0 {
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
	case sp.Mirror >= 100:
		b.WriteString("    * 1;\n")
	case sp.Mirror > 0:
		fmt.Fprintf(&b, "    %d%% 1;\n    * \"\";\n", sp.Mirror)
	default:
		b.WriteString("    * \"\";\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// renderServer renders the server-level file. The mirror directive is there
// only while a share is mirrored, so that nothing is copied otherwise.
func (r *nginxRoute) renderServer(planName string, sp traffic.Split) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, planName)
	if sp.Mirror > 0 {
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
// address is not live for their side (one that restarted with another
// address, or went) take nothing, so such drift shows
// as a split off its target and the next apply renders it again. Without a
// file, nothing reaches the candidate.
func (r *nginxRoute) observe(live map[string]string) (traffic.Split, error) {
	content, err := os.ReadFile(r.httpPath())
	if errors.Is(err, fs.ErrNotExist) {
		return traffic.Split{}, nil
	}
	if err != nil {
		return traffic.Split{}, fmt.Errorf("read the nginx file: %w", err)
	}
	rd, err := r.parseHTTP(string(content))
	if err != nil {
		return traffic.Split{}, fmt.Errorf("read the nginx file %s: %w", r.httpPath(), err)
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
	sp := traffic.Split{Mirror: rd.mirror}
	if total > 0 {
		sp.Traffic = int(math.Round(100 * float64(cand) / float64(total)))
	}
	return sp, nil
}

// nginxRouter is the nginx router of one plan's driver: nginxRoute's
// files, checked, swapped in and reloaded.
type nginxRouter struct {
	*nginxRoute
	d *Driver
	// unloaded (under d.mu, which Apply holds) is set when nginx on the
	// host was found not running after new files were written: whether
	// it read them as it started is not known, so the next swap reloads
	// even if the files are as wanted.
	unloaded bool
}

var (
	_ router  = (*nginxRouter)(nil)
	_ claimer = (*nginxRouter)(nil)
	_ starter = (*nginxRouter)(nil)
	_ housed  = (*nginxRouter)(nil)
)

// openNginx opens the router of traffic.nginx.
func openNginx(d *Driver, t plan.DockerTraffic) (router, error) {
	if !upstreamName.MatchString(t.Nginx.Upstream) {
		return nil, fmt.Errorf("plan %s: nginx upstream %q: want letters, digits, '_', '.' and '-'", d.plan, t.Nginx.Upstream)
	}
	if d.opts.NginxDir == "" {
		return nil, fmt.Errorf("plan %s routes through nginx, but the daemon has no nginx folder configured to render into", d.plan)
	}
	return &nginxRouter{nginxRoute: &nginxRoute{upstream: t.Nginx.Upstream, container: t.Nginx.Container, dir: d.opts.NginxDir}, d: d}, nil
}

func (r *nginxRouter) claims() []string  { return []string{r.httpPath()} }
func (r *nginxRouter) container() string { return r.nginxRoute.container }

// Check makes sure nginx in a container is there and running: nothing is
// scaled for a route that cannot be written. Nginx can mirror.
func (r *nginxRouter) Check(ws *workloads, _ traffic.Split) error {
	if ws.router == nil && r.nginxRoute.container != "" {
		return fmt.Errorf("nginx container %s not found", r.nginxRoute.container)
	}
	if ws.router != nil && !ws.router.running {
		return fmt.Errorf("nginx container %s is not running", ws.router.name)
	}
	return nil
}

// Observe reads the split back from the rendered file.
func (r *nginxRouter) Observe(_ context.Context, ws *workloads) (traffic.Split, error) {
	if r.nginxRoute.container != "" && ws.router == nil {
		return traffic.Split{}, fmt.Errorf("nginx container %s not found", r.nginxRoute.container)
	}
	return r.observe(r.d.liveAddrs(ws))
}

// Route renders sp for the running members of ws, checks it, swaps it in
// and reloads nginx. At 100% no stable server is written, so a stable
// about to be decommissioned takes nothing.
func (r *nginxRouter) Route(ctx context.Context, ws *workloads, sp traffic.Split) error {
	sb, err := r.d.backendsOf(ws, ws.stable.running(), roleStable)
	if err != nil {
		return err
	}
	cb, err := r.d.backendsOf(ws, ws.cand.running(), roleCandidate)
	if err != nil {
		return err
	}
	httpConf, err := r.renderHTTP(r.d.plan, sp, sb, cb)
	if err != nil {
		return err
	}
	return r.swap(ctx, ws.router, httpConf, r.renderServer(r.d.plan, sp), false)
}

// start renders all traffic to stable when no file exists yet, so that an
// nginx configuration that includes the files can start. With nginx in a
// container that is not running, the files are written unchecked: that
// nginx checks them as it starts.
func (r *nginxRouter) start(ctx context.Context) error {
	if _, err := os.Stat(r.httpPath()); err == nil {
		return nil
	}
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	ws, err := d.load(ctx)
	if err != nil {
		return err
	}
	sb, err := d.backendsOf(ws, ws.stable.running(), roleStable)
	if err != nil {
		return err
	}
	httpConf, err := r.renderHTTP(d.plan, traffic.Split{}, sb, nil)
	if err != nil {
		return err
	}
	serverConf := r.renderServer(d.plan, traffic.Split{})
	if r.nginxRoute.container != "" && (ws.router == nil || !ws.router.running) {
		if err := atomicfile.Write(r.serverPath(), []byte(serverConf), 0o644); err != nil {
			return err
		}
		return atomicfile.Write(r.httpPath(), []byte(httpConf), 0o644)
	}
	return r.swap(ctx, ws.router, httpConf, serverConf, true)
}

// swap checks the new files on their own with `nginx -t`, renames them over
// the old ones, checks nginx's whole configuration and puts the old files
// back if it fails, then reloads nginx, putting the old files back if the
// reload fails, so that nginx never finds files it did not take. Nginx on
// the host not running is not such a failure: the checked files stay, for
// it to read when it starts, and the error says to start it. The first
// files (initial) may find nginx on the host not started yet, waiting for
// them: a failed reload is then only logged.
func (r *nginxRouter) swap(ctx context.Context, router *member, httpConf, serverConf string, initial bool) error {
	d := r.d
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("nginx folder: %w", err)
	}
	oldHTTP, errH := os.ReadFile(r.httpPath())
	oldServer, errS := os.ReadFile(r.serverPath())
	same := errH == nil && errS == nil && string(oldHTTP) == httpConf && string(oldServer) == serverConf
	if same && !r.unloaded {
		return nil // nothing to change: no reload either
	}
	if same {
		// The files are as wanted, but nginx may have started on the
		// ones before them: reload, and nothing else.
		return r.reloadHost(ctx, initial, nil)
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
	seen := r.routerPath(router)
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
	if out, err := d.run(ctx, router, r.nginxCommand("-t", "-q", "-c", seen(check))); err != nil {
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
		full = r.nginxCommand("-t", "-q")
	}
	if len(full) > 0 {
		if out, err := d.run(ctx, router, full); err != nil {
			if initial && errH != nil && errS != nil {
				// This upstream's first files, all traffic to stable,
				// passed their own check, and the whole configuration
				// fails: on another plan's files not written yet, most
				// likely (plans sharing one nginx, each proxying to its
				// own upstream). They stay, for nginx to read once the
				// whole configuration passes; nothing is reloaded.
				r.unloaded = true
				d.opts.Log.Warn("nginx -t fails for the whole configuration; this upstream's first files (all traffic to stable) stay for nginx to read once it passes",
					"plan", d.plan, "upstream", r.upstream, "output", lastLine(out))
				return nil
			}
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
	return r.reloadHost(ctx, initial, restore)
}

// reloadHost reloads nginx on the host. When it is not running the files,
// which passed nginx -t, stay for it to read as it starts; since it may be
// starting on the ones before them just then, the next swap reloads
// again. Another failure puts the old files back with restore (nil: the
// files did not change). Like swap, it runs under d.mu.
func (r *nginxRouter) reloadHost(ctx context.Context, initial bool, restore func(error) error) error {
	d := r.d
	out, err := d.run(ctx, nil, d.opts.NginxReload)
	// The first files of all cannot have been read before: nginx cannot
	// start without them.
	r.unloaded = err != nil && hostNginxDown(out) && !initial
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
func (r *nginxRouter) nginxCommand(args ...string) []string {
	return append([]string{r.d.opts.NginxBinary}, args...)
}

// routerPath maps a path under NginxDir to the path nginx sees.
func (r *nginxRouter) routerPath(router *member) func(string) string {
	if router == nil {
		return func(p string) string { return p }
	}
	dir := r.d.opts.NginxRouterDir
	if dir == "" {
		// The router's mount of NginxDir or of a folder above it; the
		// deepest one wins. None (the daemon in a container sharing a
		// volume, say): the same path.
		dir = r.dir
		best := -1
		for _, mnt := range router.info.Mounts {
			rel, err := filepath.Rel(filepath.Clean(mnt.Source), filepath.Clean(r.dir))
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || len(mnt.Source) <= best {
				continue
			}
			dir, best = filepath.Join(mnt.Destination, rel), len(mnt.Source)
		}
	}
	return func(p string) string {
		rel, err := filepath.Rel(r.dir, p)
		if err != nil {
			return p
		}
		return filepath.ToSlash(filepath.Join(dir, rel))
	}
}

// run runs cmd on the host, or in the router container, and returns its
// output; a non-zero exit is an error.
func (d *Driver) run(ctx context.Context, router *member, cmd []string) (string, error) {
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
