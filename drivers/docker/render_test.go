package docker

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/drivers/flagd"
	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

func backends(role string, addrs ...string) []backend {
	var out []backend
	for i, a := range addrs {
		out = append(out, backend{role: role, name: role + "-" + string(rune('1'+i)), addr: a})
	}
	return out
}

func TestRenderParseRoundTrip(t *testing.T) {
	r := &nginxRoute{upstream: "app-v1", dir: t.TempDir()}
	stable := backends(roleStable, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	cand := backends(roleCandidate, "10.0.0.9:8080")
	for _, tc := range []struct {
		sp      traffic.Split
		weights map[string]int
	}{
		{traffic.Split{Traffic: 0, Mirror: 0}, map[string]int{"10.0.0.1:8080": 1, "10.0.0.2:8080": 1, "10.0.0.3:8080": 1}},
		{traffic.Split{Traffic: 0, Mirror: 100}, map[string]int{"10.0.0.1:8080": 1, "10.0.0.2:8080": 1, "10.0.0.3:8080": 1}},
		{traffic.Split{Traffic: 0, Mirror: 35}, nil},
		{traffic.Split{Traffic: 10, Mirror: 0}, map[string]int{"10.0.0.1:8080": 3, "10.0.0.2:8080": 3, "10.0.0.3:8080": 3, "10.0.0.9:8080": 1}},
		{traffic.Split{Traffic: 25, Mirror: 0}, map[string]int{"10.0.0.1:8080": 1, "10.0.0.2:8080": 1, "10.0.0.3:8080": 1, "10.0.0.9:8080": 1}},
		{traffic.Split{Traffic: 33, Mirror: 0}, nil},
		{traffic.Split{Traffic: 50, Mirror: 0}, map[string]int{"10.0.0.1:8080": 1, "10.0.0.2:8080": 1, "10.0.0.3:8080": 1, "10.0.0.9:8080": 3}},
		{traffic.Split{Traffic: 100, Mirror: 0}, map[string]int{"10.0.0.9:8080": 1}},
	} {
		conf, err := r.renderHTTP("p", tc.sp, stable, cand)
		if err != nil {
			t.Fatalf("render %+v: %v", tc.sp, err)
		}
		rd, err := r.parseHTTP(conf)
		if err != nil {
			t.Fatalf("parse %+v: %v\n%s", tc.sp, err, conf)
		}
		var total, c int
		got := map[string]int{}
		for _, s := range rd.servers {
			total += s.weight
			if s.role == roleCandidate {
				c += s.weight
			}
			got[s.addr] = s.weight
		}
		if share := 100 * c / total; share != tc.sp.Traffic {
			t.Errorf("%+v: the weights give the candidate %d%%\n%s", tc.sp, share, conf)
		}
		if rd.mirror != tc.sp.Mirror {
			t.Errorf("%+v: mirror read back as %d\n%s", tc.sp, rd.mirror, conf)
		}
		if tc.weights != nil && !maps.Equal(got, tc.weights) {
			t.Errorf("%+v: weights %v, want %v\n%s", tc.sp, got, tc.weights, conf)
		}
	}
}

func TestRenderRefusesMissingSides(t *testing.T) {
	r := &nginxRoute{upstream: "app"}
	stable := backends(roleStable, "10.0.0.1:80")
	cand := backends(roleCandidate, "10.0.0.2:80")
	for _, tc := range []struct {
		sp            traffic.Split
		stable, cands []backend
		want          string
	}{
		{traffic.Split{Traffic: 50, Mirror: 0}, nil, cand, "stable has no running container"},
		{traffic.Split{Traffic: 50, Mirror: 0}, stable, nil, "candidate has no running container"},
		{traffic.Split{Traffic: 0, Mirror: 10}, stable, nil, "mirrored"},
	} {
		if _, err := r.renderHTTP("p", tc.sp, tc.stable, tc.cands); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("renderHTTP(%+v) = %v, want an error saying %q", tc.sp, err, tc.want)
		}
	}
	if _, err := r.renderHTTP("p", traffic.Split{Traffic: 100, Mirror: 0}, nil, cand); err != nil {
		t.Errorf("at 100%% stable may be gone: %v", err)
	}
}

func TestParseRejectsForeignFiles(t *testing.T) {
	r := &nginxRoute{upstream: "app"}
	for _, conf := range []string{
		"upstream app {\n    server 10.0.0.1:80 weight=x; # stable a\n}\n",
		"upstream app {\n    server 10.0.0.1:80; # someone\n}\n",
		"upstream app {\n    server 10.0.0.1:80 weight=0; # stable a\n}\n",
	} {
		if _, err := r.parseHTTP(conf); err == nil {
			t.Errorf("parseHTTP accepted\n%s", conf)
		}
	}
}

// TestRenderedFilesPassNginx checks the rendered files with the real nginx
// -t, as the driver does before it swaps them in, for every kind of split.
func TestRenderedFilesPassNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		t.Fatal("nginx is not installed: apt-get install -y nginx-light (.ci/run installs it)")
	}
	dir := t.TempDir()
	r := &nginxRoute{upstream: "app.v2-x", dir: dir}
	stable := backends(roleStable, "127.0.0.1:18080", "127.0.0.1:18081")
	cand := backends(roleCandidate, "127.0.0.1:18082")
	for _, sp := range []traffic.Split{{Traffic: 0, Mirror: 0}, {Traffic: 0, Mirror: 100}, {Traffic: 0, Mirror: 7}, {Traffic: 10, Mirror: 0}, {Traffic: 50, Mirror: 50}, {Traffic: 100, Mirror: 0}} {
		c := cand
		conf, err := r.renderHTTP("p", sp, stable, c)
		if err != nil {
			t.Fatal(err)
		}
		write := func(name, content string) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		h := write("h.conf", conf)
		s := write("s.conf", r.renderServer("p", sp))
		main := write("nginx.conf", "error_log stderr;\npid "+dir+"/pid;\nevents {}\nhttp {\n include "+h+";\n server {\n  listen 127.0.0.1:9;\n  include "+s+";\n  location / { proxy_pass http://app.v2-x; }\n }\n}\n")
		if out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", main).CombinedOutput(); err != nil {
			t.Errorf("%+v: nginx -t: %v\n%s\n%s\n%s", sp, err, out, conf, r.renderServer("p", sp))
		}
	}
}

func TestFlagsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.flagd.json")
	if got, err := readFlags(path); err != nil || got != nil {
		t.Errorf("no file read as %v, %v; want no flags", got, err)
	}
	for _, flags := range []map[string]int{
		{},
		{"a": 0, "b": 100, "c": 10, "hierarchical_neurons": 25, "x.y-z": 99},
	} {
		if err := writeFlags(path, flags); err != nil {
			t.Fatal(err)
		}
		got, err := readFlags(path)
		if err != nil {
			b, _ := os.ReadFile(path)
			t.Fatalf("read %s: %v", b, err)
		}
		if !maps.Equal(got, flags) {
			t.Errorf("flags %v read back as %v", flags, got)
		}
	}
	if err := writeFlags(path, map[string]int{"a": 101}); err == nil {
		t.Error("writeFlags accepted 101%")
	}
}

// TestFlagsFormat checks the flags file: flagd's document as drivers/flagd
// renders it (and pins), ending with a newline as a text file does.
func TestFlagsFormat(t *testing.T) {
	flags := map[string]int{"new_cart": 10, "all": 100}
	path := filepath.Join(t.TempDir(), "flags.flagd.json")
	if err := writeFlags(path, flags); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := flagd.Render(flags)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(doc) + "\n"; string(b) != want {
		t.Errorf("flags file:\n%s\nwant\n%s", b, want)
	}
}

func TestJobName(t *testing.T) {
	for _, tc := range []struct{ plan, id, want string }{
		{"shop", "shop-migrate-1700000000", "hal9-job-shop-shop-migrate-1700000000"},
		{"shop", "check shop/data", "hal9-job-shop-check-shop-data-"},
	} {
		if got := jobName(tc.plan, tc.id); !strings.HasPrefix(got, tc.want) || (tc.want[len(tc.want)-1] == '-' && len(got) != len(tc.want)+8) {
			t.Errorf("jobName(%q, %q) = %q, want %q…", tc.plan, tc.id, got, tc.want)
		}
	}
	if jobName("p", "a/b") == jobName("p", "a:b") {
		t.Error("two ids that sanitise alike share a container name")
	}
}
