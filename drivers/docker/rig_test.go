package docker_test

import (
	"context"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers/docker"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

func TestMain(m *testing.M) { dockertest.Main(m) }

// Routers of a rig.
const (
	noRouter        = ""          // replica ratio
	routerHost      = "host"      // nginx on the host, reloaded by command
	routerContainer = "container" // nginx in a container, reloaded by SIGHUP
	routerHAProxy   = "haproxy"   // HAProxy on the host, through its runtime API
)

// setup is what a rig runs.
type setup struct {
	// compose selects the workloads by Compose service labels, else by
	// container name prefix.
	compose bool
	router  string
	// replicas is the LabelReplicas of stable's container; 0: none.
	replicas int
	// options changes the driver's options.
	options func(*docker.Options)
	// nginxStopped leaves nginx on the host not started: the test starts
	// it (rig.hostNginx.Start).
	nginxStopped bool
}

// rig is a stable and a candidate container of the testapp on their own
// network, a router if the setup has one, and the driver of a plan over
// them.
type rig struct {
	cli       *client.Client
	labels    map[string]string
	image     string
	net       string
	plan      *plan.Plan
	drv       *docker.Driver
	stable    string // container ids
	candidate string
	// addr is where clients send requests: the router's address.
	addr      string
	nginxDir  string
	flagsPath string
	// hostNginx is nginx on the host, for a host router.
	hostNginx *dockertest.HostNginx
}

func newRig(t *testing.T, s setup) *rig {
	t.Helper()
	r := &rig{cli: dockertest.Client(t), labels: dockertest.Labels(t), image: dockertest.TestAppImage(t)}
	r.net = dockertest.Network(t, r.labels)
	base := dockertest.Name("app")
	tmp := t.TempDir()
	r.nginxDir = filepath.Join(tmp, "nginx")
	planName := dockertest.Name("plan")
	r.flagsPath = filepath.Join(tmp, "flags", planName+".flagd.json")

	var stableSel, candSel plan.DockerWorkload
	start := func(version, name string, labels map[string]string, aliases []string) string {
		all := map[string]string{}
		for k, v := range r.labels {
			all[k] = v
		}
		for k, v := range labels {
			all[k] = v
		}
		return dockertest.Start(t, dockertest.Container{
			Name: name, Image: r.image, Cmd: []string{"serve", "-version", version},
			Labels: all, Network: r.net, Aliases: aliases, Publish: []string{"8080"},
		})
	}
	stableLabels := map[string]string{}
	if s.replicas > 0 {
		stableLabels[docker.LabelReplicas] = strconv.Itoa(s.replicas)
	}
	if s.compose {
		stableSel, candSel = plan.DockerWorkload{Service: "stable-" + base}, plan.DockerWorkload{Service: "candidate-" + base}
		compose := func(service string) map[string]string {
			return map[string]string{"com.docker.compose.project": base, "com.docker.compose.service": service, "com.docker.compose.container-number": "1"}
		}
		for k, v := range compose(stableSel.Service) {
			stableLabels[k] = v
		}
		both(
			func() {
				r.stable = start("stable", base+"-"+stableSel.Service+"-1", stableLabels, []string{stableSel.Service})
			},
			func() {
				r.candidate = start("candidate", base+"-"+candSel.Service+"-1", compose(candSel.Service), []string{candSel.Service})
			})
	} else {
		// The candidate's prefix extends stable's: its containers are
		// the candidate's, not stable's.
		stableSel, candSel = plan.DockerWorkload{Container: base}, plan.DockerWorkload{Container: base + "-v2"}
		both(func() { r.stable = start("stable", base, stableLabels, nil) },
			func() { r.candidate = start("candidate", base+"-v2", nil, nil) })
	}

	opts := docker.Options{
		Client: r.cli, Labels: r.labels, StopTimeout: 2 * time.Second,
		FlagsPath: filepath.Join(tmp, "flags", "{plan}.flagd.json"),
		NginxDir:  r.nginxDir,
	}
	p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Metadata: plan.Metadata{Name: planName}}
	dd := &plan.DockerDriver{Stable: stableSel, Candidate: candSel}
	p.Spec.Driver.Docker = dd
	upstream := "app_" + base
	var afterOpen func()
	switch s.router {
	case routerHost:
		dd.Traffic = &plan.DockerTraffic{Nginx: &plan.NginxRouter{Upstream: upstream}}
		n := dockertest.NewHostNginx(t, r.nginxDir, upstream)
		opts.NginxTest, opts.NginxReload = n.Test(), n.Reload()
		r.addr, r.hostNginx = n.Addr, n
		if !s.nginxStopped {
			afterOpen = func() { n.Start(t) }
		}
	case routerContainer:
		name := base + "-router"
		dd.Traffic = &plan.DockerTraffic{Nginx: &plan.NginxRouter{Container: name, Upstream: upstream}}
		conf := dockertest.WriteFile(t, tmp, "router/nginx.conf", dockertest.NginxConf("80", "/etc/nginx/hal9", upstream, ""))
		id := dockertest.Create(t, dockertest.Container{
			Name: name, Image: dockertest.NginxImage(t), Labels: r.labels, Network: r.net, Publish: []string{"80"},
			Binds: []string{conf + ":/etc/nginx/nginx.conf:ro", r.nginxDir + ":/etc/nginx/hal9"},
		})
		// The router starts once the driver has rendered the files its
		// configuration includes.
		afterOpen = func() {
			if _, err := r.cli.ContainerStart(context.Background(), id, client.ContainerStartOptions{}); err != nil {
				t.Fatalf("start the router: %v", err)
			}
			r.addr = dockertest.HostAddr(t, id, "80")
		}
	case routerHAProxy:
		dd.Traffic = &plan.DockerTraffic{HAProxy: &plan.HAProxyRouter{Backend: upstream}}
		h := dockertest.StartHostHAProxy(t, upstream)
		opts.HAProxyRuntimeAPI, r.addr = h.Socket, h.Addr
	}
	if s.options != nil {
		s.options(&opts)
		s.options(&opts)
	}
	r.plan = p

	eng, err := docker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	d, err := eng.Open(ctx, p)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	r.drv = d.(*docker.Driver)
	if afterOpen != nil {
		afterOpen()
	}
	return r
}

// both runs f and g at once: the engine takes most of a second to start a
// container.
func both(f, g func()) {
	var wg sync.WaitGroup
	wg.Go(f)
	wg.Go(g)
	wg.Wait()
}
