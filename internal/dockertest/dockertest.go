// Package dockertest is test equipment for tests that run containers on the
// Docker engine of the machine: a client, unique names, images built FROM
// scratch (the static testapp, and nginx from the host's Debian package with
// its shared libraries) so that nothing is pulled, networks and containers,
// and their removal.
//
// Everything it makes carries the label LabelRun, whose value starts with
// the time the test process started; a test's things also carry LabelTest,
// unique to the test, and are removed when the test ends. Main removes what
// the process made, and what runs that started more than an hour ago left
// behind (a killed test process cannot clean up after itself).
//
// It is test equipment: nothing in the product imports it.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/internal/testapp"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// The labels on everything this package makes.
const (
	LabelRun  = "migrate.hal9.ai/test-run"
	LabelTest = "migrate.hal9.ai/test"
)

// staleAfter is how old a run's leftovers are before Main removes them.
const staleAfter = time.Hour

var run = struct {
	once sync.Once
	id   string
}{}

// RunID identifies this test process: its start time in Unix seconds and a
// random part.
func RunID() string {
	run.once.Do(func() { run.id = strconv.FormatInt(time.Now().Unix(), 10) + "-" + randomHex(4) })
	return run.id
}

// Name returns a container, network or image name unique across runs:
// "hal9t-WHAT-RANDOM".
func Name(what string) string { return "hal9t-" + what + "-" + randomHex(4) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var shared = struct {
	once sync.Once
	cli  *client.Client
	err  error
}{}

// Client returns a client of the engine DOCKER_HOST names, or of the local
// socket. It skips the test, loudly, only when the machine has no engine at
// all; an engine that is there and does not answer fails it.
func Client(t testing.TB) *client.Client {
	t.Helper()
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); errors.Is(err, os.ErrNotExist) {
			testenv.Missing(t, "no Docker engine on this machine (no DOCKER_HOST, no /var/run/docker.sock)")
		}
	}
	cli, err := connect()
	if err != nil {
		t.Fatalf("docker engine: %v", err)
	}
	return cli
}

func connect() (*client.Client, error) {
	shared.once.Do(func() {
		cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			shared.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
			shared.err = fmt.Errorf("the engine does not answer: %w", err)
			return
		}
		shared.cli = cli
	})
	return shared.cli, shared.err
}

// Main runs the tests, then removes what this process made and what runs
// older than an hour left behind, and runs cleanups. Use it as a package's
// TestMain:
//
//	func TestMain(m *testing.M) { dockertest.Main(m) }
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	if cli, err := connect(); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if err := Sweep(ctx, cli, func(v string) bool { return v == RunID() || stale(v) }); err != nil {
			fmt.Fprintln(os.Stderr, "dockertest: clean up:", err)
		}
		cancel()
	}
	os.Exit(code)
}

func stale(runID string) bool {
	started, _, _ := strings.Cut(runID, "-")
	sec, err := strconv.ParseInt(started, 10, 64)
	return err == nil && time.Since(time.Unix(sec, 0)) > staleAfter
}

// Sweep removes the containers, networks and images whose LabelRun value
// match accepts.
func Sweep(ctx context.Context, cli client.APIClient, match func(runID string) bool) error {
	return remove(ctx, cli, client.Filters{}.Add("label", LabelRun), func(labels map[string]string) bool { return match(labels[LabelRun]) })
}

// remove removes containers, then networks, then images that filter lists
// and keep accepts.
func remove(ctx context.Context, cli client.APIClient, filter client.Filters, keep func(map[string]string) bool) error {
	var errs []error
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
	if err != nil {
		return err
	}
	// One at a time, removing takes the engine most of a second each.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range cs.Items {
		if keep(c.Labels) {
			wg.Go(func() {
				if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: filter})
	if err != nil {
		return err
	}
	for _, n := range ns.Items {
		if keep(n.Labels) {
			if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	is, err := cli.ImageList(ctx, client.ImageListOptions{Filters: filter})
	if err != nil {
		return err
	}
	for _, i := range is.Items {
		if keep(i.Labels) {
			if _, err := cli.ImageRemove(ctx, i.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Labels returns the labels of t's containers and networks, and removes
// everything that carries them when t ends. Give them to drivers too, so
// that what they create goes as well.
func Labels(t testing.TB) map[string]string {
	t.Helper()
	cli := Client(t)
	id := Name("test")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := remove(ctx, cli, client.Filters{}.Add("label", LabelTest+"="+id), func(map[string]string) bool { return true })
		if err != nil {
			t.Errorf("dockertest: clean up after %s: %v", t.Name(), err)
		}
	})
	return map[string]string{LabelRun: RunID(), LabelTest: id}
}

// File is a file of an image's build context.
type File struct {
	Data []byte
	Mode int64 // 0: 0644; a directory when Dir is set
	Dir  bool
}

// BuildImage builds tag from files (a Dockerfile among them) with the
// engine's classic builder, labelled for Main to remove. Nothing is pulled:
// the Dockerfile must build FROM scratch.
func BuildImage(ctx context.Context, cli client.APIClient, tag string, files map[string]File) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, f := range files {
		h := &tar.Header{Name: name, Mode: f.Mode, Size: int64(len(f.Data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if f.Dir {
			h.Typeflag, h.Size, h.Name = tar.TypeDir, 0, strings.TrimSuffix(name, "/")+"/"
			if f.Mode == 0 {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(f.Data); err != nil && !f.Dir {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true,
		Labels: map[string]string{LabelRun: RunID()},
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", tag, err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	var log strings.Builder
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("build %s: %w", tag, err)
		}
		log.WriteString(m.Stream)
		if m.Error != nil {
			return fmt.Errorf("build %s: %s\n%s", tag, m.Error.Message, log.String())
		}
	}
	return nil
}

var images = struct {
	sync.Mutex
	built map[string]string
	errs  map[string]error
}{built: map[string]string{}, errs: map[string]error{}}

// image builds an image once per process under key.
func image(t testing.TB, key string, build func(ctx context.Context, cli client.APIClient, tag string) error) string {
	t.Helper()
	cli := Client(t)
	images.Lock()
	defer images.Unlock()
	if tag, ok := images.built[key]; ok {
		return tag
	}
	if err, ok := images.errs[key]; ok {
		t.Fatal(err)
	}
	tag := "hal9t-" + key + ":" + RunID()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := build(ctx, cli, tag); err != nil {
		images.errs[key] = err
		t.Fatal(err)
	}
	images.built[key] = tag
	return tag
}

// TestAppImage returns an image of the testapp command FROM scratch, built
// once per process: its entrypoint is /testapp, its command "serve", and it
// exposes 8080.
func TestAppImage(t testing.TB) string {
	t.Helper()
	bin := testapp.Binary(t)
	return image(t, "testapp", func(ctx context.Context, cli client.APIClient, tag string) error {
		data, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		return BuildImage(ctx, cli, tag, map[string]File{
			"Dockerfile": {Data: []byte("FROM scratch\nCOPY testapp /testapp\nEXPOSE 8080\nENTRYPOINT [\"/testapp\"]\nCMD [\"serve\"]\n")},
			"testapp":    {Data: data, Mode: 0o755},
		})
	})
}

// NginxImage returns an image FROM scratch holding the machine's nginx
// binary and the shared libraries it links (found with ldd), a passwd and
// group file for its workers, and the folders the Debian build expects. Its
// entrypoint runs nginx in the foreground with /etc/nginx/nginx.conf, which
// the test mounts. It fails the test when nginx is not installed:
// `apt-get install nginx-light` (.ci/run does).
func NginxImage(t testing.TB) string {
	t.Helper()
	bin := NginxBinary(t)
	return image(t, "nginx", func(ctx context.Context, cli client.APIClient, tag string) error {
		out, err := exec.Command("ldd", bin).Output()
		if err != nil {
			return fmt.Errorf("ldd %s: %w", bin, err)
		}
		files := map[string]File{}
		add := func(src, dst string, mode int64) error {
			data, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			files["rootfs"+dst] = File{Data: data, Mode: mode}
			return nil
		}
		if err := add(bin, "/usr/sbin/nginx", 0o755); err != nil {
			return err
		}
		for _, line := range strings.Split(string(out), "\n") {
			// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
			// "/lib64/ld-linux-x86-64.so.2 (0x...)".
			fields := strings.Fields(line)
			path := ""
			switch {
			case len(fields) >= 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "/"):
				path = fields[2]
			case len(fields) >= 1 && strings.HasPrefix(fields[0], "/"):
				path = fields[0]
			}
			if path != "" {
				if err := add(path, path, 0o755); err != nil {
					return err
				}
			}
		}
		files["rootfs/etc/passwd"] = File{Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")}
		files["rootfs/etc/group"] = File{Data: []byte("root:x:0:\nnogroup:x:65534:\n")}
		for _, dir := range []string{"/etc/nginx", "/var/log/nginx", "/run", "/tmp", "/var/lib/nginx"} {
			files["rootfs"+dir] = File{Dir: true, Mode: 0o777}
		}
		for _, dir := range []string{"body", "proxy", "fastcgi", "scgi", "uwsgi"} {
			files["rootfs/var/lib/nginx/"+dir] = File{Dir: true, Mode: 0o777}
		}
		files["Dockerfile"] = File{Data: []byte("FROM scratch\nCOPY rootfs/ /\nENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu\n" +
			"ENTRYPOINT [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]\n")}
		return BuildImage(ctx, cli, tag, files)
	})
}

// NginxBinary returns the path of the machine's nginx, failing the test
// when there is none.
func NginxBinary(t testing.TB) string {
	t.Helper()
	return hostBinary(t, "nginx", "nginx-light")
}

// hostBinary returns the path of the machine's command name, in sbin or on
// the PATH, failing the test when there is none and saying which Debian
// package has it.
func hostBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/" + name, "/usr/local/sbin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is not installed: apt-get install -y %s (scripts/test-env.sh installs it)", name, pkg)
	return ""
}

// Network creates a bridge network with t's labels; it goes when t ends.
func Network(t testing.TB, labels map[string]string) string {
	t.Helper()
	cli := Client(t)
	name := Name("net")
	if _, err := cli.NetworkCreate(context.Background(), name, client.NetworkCreateOptions{Driver: "bridge", Labels: labels}); err != nil {
		t.Fatalf("create network %s: %v", name, err)
	}
	return name
}

// Container is a container for Start to run.
type Container struct {
	Name   string
	Image  string
	Cmd    []string
	Env    []string
	Labels map[string]string
	// Network and Aliases: the network the container joins, and its names
	// there.
	Network string
	Aliases []string
	// Publish are container ports ("8080") published on a free port of
	// 127.0.0.1.
	Publish []string
	// Binds are bind mounts ("/host/dir:/container/dir").
	Binds       []string
	Healthcheck *container.HealthConfig
	// Resources limit its CPU and memory.
	Resources container.Resources
}

// Start creates and starts c and returns its id. It goes with t's labels,
// which c.Labels should hold.
func Start(t testing.TB, c Container) string {
	t.Helper()
	id := Create(t, c)
	if _, err := Client(t).ContainerStart(context.Background(), id, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start container %s: %v", c.Name, err)
	}
	return id
}

// Create creates c without starting it and returns its id.
func Create(t testing.TB, c Container) string {
	t.Helper()
	cli := Client(t)
	cfg := &container.Config{Image: c.Image, Cmd: c.Cmd, Env: c.Env, Labels: c.Labels, Healthcheck: c.Healthcheck, ExposedPorts: network.PortSet{}}
	hc := &container.HostConfig{Binds: c.Binds, PortBindings: network.PortMap{}, Resources: c.Resources}
	for _, p := range c.Publish {
		port, err := network.ParsePort(p + "/tcp")
		if err != nil {
			t.Fatal(err)
		}
		cfg.ExposedPorts[port] = struct{}{}
		hc.PortBindings[port] = []network.PortBinding{{HostIP: mustAddr("127.0.0.1")}}
	}
	var nc *network.NetworkingConfig
	if c.Network != "" {
		hc.NetworkMode = container.NetworkMode(c.Network)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{c.Network: {Aliases: c.Aliases}}}
	}
	ctx := context.Background()
	res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc, NetworkingConfig: nc, Name: c.Name})
	if err != nil {
		t.Fatalf("create container %s: %v", c.Name, err)
	}
	return res.ID
}

// HostAddr returns the 127.0.0.1 address a container's port is published
// on.
func HostAddr(t testing.TB, id, port string) string {
	t.Helper()
	res, err := Client(t).ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := network.ParsePort(port + "/tcp")
	if err != nil {
		t.Fatal(err)
	}
	if ns := res.Container.NetworkSettings; ns != nil {
		for _, b := range ns.Ports[p] {
			if b.HostPort != "" {
				return net.JoinHostPort("127.0.0.1", b.HostPort)
			}
		}
	}
	t.Fatalf("container %s publishes no port %s", id, port)
	return ""
}

// FreePort returns a TCP port of 127.0.0.1 free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WriteFile writes a file under dir, making its folders.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// NginxConf returns an nginx.conf whose server listens on listen and sends
// every request to upstream, through the files the Docker driver renders
// into hal9Dir. With a prefix (nginx on the host), the pid file, error log
// and temporary folders go there.
func NginxConf(listen, hal9Dir, upstream, prefix string) string {
	var b strings.Builder
	b.WriteString("worker_processes 2;\n")
	if prefix != "" {
		fmt.Fprintf(&b, "pid %s/nginx.pid;\nerror_log %s/error.log warn;\n", prefix, prefix)
	} else {
		b.WriteString("error_log stderr warn;\n")
	}
	b.WriteString("events { worker_connections 1024; }\nhttp {\n    access_log off;\n")
	if prefix != "" {
		for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			fmt.Fprintf(&b, "    %s_temp_path %s/tmp/%s;\n", p, prefix, p)
		}
	}
	fmt.Fprintf(&b, `    include %[1]s/%[2]s.http.conf;
    server {
        listen %[3]s;
        include %[1]s/%[2]s.server.conf;
        location / {
            proxy_pass http://%[2]s;
            proxy_set_header Host $host;
        }
    }
}
`, hal9Dir, upstream, listen)
	return b.String()
}

// HostNginx is an nginx the test runs on the host, its configuration,
// pid file and logs in a temporary folder.
type HostNginx struct {
	Bin  string
	Dir  string
	Conf string
	Addr string // 127.0.0.1:PORT
}

// Test and Reload are the commands that check and reload it, for the
// driver's options.
func (n *HostNginx) Test() []string { return []string{n.Bin, "-p", n.Dir, "-c", n.Conf, "-t", "-q"} }
func (n *HostNginx) Reload() []string {
	return []string{n.Bin, "-p", n.Dir, "-c", n.Conf, "-s", "reload"}
}

// NewHostNginx writes an nginx.conf routing upstream through hal9Dir on a
// free 127.0.0.1 port, without starting nginx: the driver renders the files
// it includes first. Start starts it.
func NewHostNginx(t testing.TB, hal9Dir, upstream string) *HostNginx {
	t.Helper()
	n := &HostNginx{Bin: NginxBinary(t), Dir: t.TempDir()}
	n.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, "tmp", p), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	n.Conf = WriteFile(t, n.Dir, "nginx.conf", NginxConf(n.Addr, hal9Dir, upstream, n.Dir))
	return n
}

// Start starts nginx, which puts itself in the background, and stops it
// (its master process, by the pid it wrote) when t ends.
func (n *HostNginx) Start(t testing.TB) {
	t.Helper()
	out, err := exec.Command(n.Bin, "-p", n.Dir, "-c", n.Conf).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(n.Dir, "error.log"))
		t.Fatalf("start nginx: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(func() {
		b, err := os.ReadFile(filepath.Join(n.Dir, "nginx.pid"))
		if err != nil {
			return
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return
		}
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Signal(syscall.SIGQUIT)
			for range 100 {
				if p.Signal(syscall.Signal(0)) != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			_ = p.Signal(syscall.SIGKILL)
		}
	})
}
