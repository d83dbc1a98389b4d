// Package compose holds no code: its test checks that the Compose
// deployment beside it fits together — Compose accepts the file, the plans
// pass `plan vet`, the daemon accepts its configuration, and the names the
// plans use (services, the router, the nginx upstream, the flags file) are
// the ones the Compose file, nginx.conf and the daemon's settings use.
package compose

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/plan"
)

type composeFile struct {
	Services map[string]struct {
		Build *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Image   string            `yaml:"image"`
		User    string            `yaml:"user"`
		Command []string          `yaml:"command"`
		Labels  map[string]string `yaml:"labels"`
		Volumes []string          `yaml:"volumes"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// config runs `docker compose config` (or docker-compose's), which checks
// the file and prints it resolved.
func config(t *testing.T) composeFile {
	t.Helper()
	var cmd *exec.Cmd
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		cmd = exec.Command("docker", "compose", "-f", "compose.yaml", "config")
	} else if p, err := exec.LookPath("docker-compose"); err == nil {
		cmd = exec.Command(p, "-f", "compose.yaml", "config")
	} else {
		t.Fatal("neither `docker compose` nor docker-compose is installed: apt-get install -y docker-compose (.ci/run installs it)")
	}
	cmd.Env = append(os.Environ(), "HAL9_MIGRATE_REPO=/plans.git", "HAL9_PLANS_REPO=./plans.git")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr)
	}
	var f composeFile
	if err := yaml.Unmarshal(out, &f); err != nil {
		t.Fatalf("compose config printed what is not YAML: %v\n%s", err, out)
	}
	return f
}

// mount returns where a service mounts a named volume or a host path, "" if
// it does not.
func mount(volumes []string, source string) string {
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && (parts[0] == source || filepath.Base(parts[0]) == source) {
			return parts[1]
		}
	}
	return ""
}

func TestComposeDeployment(t *testing.T) {
	f := config(t)
	for _, s := range []string{"hal9-migrate", "demo-stable", "demo-candidate", "demo-router", "prometheus", "flagd"} {
		if _, ok := f.Services[s]; !ok {
			t.Errorf("compose.yaml has no service %s", s)
		}
	}
	d := f.Services["hal9-migrate"]
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// deploy/Dockerfile builds from the folder `make image` prepares.
	if d.Build == nil || filepath.Clean(d.Build.Context) != filepath.Join(root, "bin/image") ||
		filepath.Join(d.Build.Context, d.Build.Dockerfile) != filepath.Join(root, "deploy/Dockerfile") {
		t.Errorf("the daemon is built from %+v, want deploy/Dockerfile with the context bin/image", d.Build)
	}
	if mount(d.Volumes, "/var/run/docker.sock") != "/var/run/docker.sock" {
		t.Errorf("the daemon does not mount the engine's socket: %v", d.Volumes)
	}

	cfg, err := daemon.LoadConfig("hal9-migrate.yaml", daemon.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Repo = "/plans.git"
	if err := cfg.Check(); err != nil {
		t.Errorf("the daemon refuses hal9-migrate.yaml: %v", err)
	}
	if got := mount(d.Volumes, "hal9-migrate.yaml"); got != "/etc/hal9-migrate/config.yaml" || !slices.Contains(d.Command, got) {
		t.Errorf("the daemon reads its configuration from %v, mounted at %q", d.Command, got)
	}
	// The router and the daemon see the rendered files at one path, so the
	// daemon's nginx -t inside the router finds them where it wrote them.
	router := f.Services["demo-router"]
	if got := mount(d.Volumes, "router"); got != cfg.Docker.NginxDir {
		t.Errorf("the daemon mounts the router volume at %q, its nginxDir is %q", got, cfg.Docker.NginxDir)
	}
	if got := mount(router.Volumes, "router"); got != cfg.Docker.NginxDir {
		t.Errorf("the router mounts the rendered files at %q, the daemon writes them to %q", got, cfg.Docker.NginxDir)
	}
	if cfg.Docker.ComposeProject == "" {
		t.Error("hal9-migrate.yaml names no Compose project")
	}
	env, err := os.ReadFile(".env")
	if err != nil || !strings.Contains(string(env), "COMPOSE_PROJECT_NAME="+cfg.Docker.ComposeProject+"\n") {
		t.Errorf(".env does not name the project %q: %s, %v", cfg.Docker.ComposeProject, env, err)
	}

	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	set, err := v.Load("plans")
	if err != nil {
		t.Fatalf("plan vet deploy/compose/plans: %v", err)
	}
	if len(set.Plans) == 0 {
		t.Fatal("deploy/compose/plans holds no plan")
	}
	nginxConf, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	flagsDir := filepath.Dir(cfg.Docker.FlagsPath)
	for _, p := range set.Plans {
		dd := p.Spec.Driver.Docker
		if dd == nil {
			t.Errorf("%s: not a docker plan", p.Metadata.Name)
			continue
		}
		for _, w := range []plan.DockerWorkload{dd.Stable, dd.Candidate} {
			if _, ok := f.Services[w.Service]; !ok {
				t.Errorf("%s: no Compose service %q", p.Metadata.Name, w.Service)
			}
		}
		if dd.Traffic == nil {
			continue
		}
		if _, ok := f.Services[dd.Traffic.Nginx.Container]; !ok {
			t.Errorf("%s: the router %q is not a Compose service", p.Metadata.Name, dd.Traffic.Nginx.Container)
		}
		up := dd.Traffic.Nginx.Upstream
		for _, want := range []string{
			"include " + cfg.Docker.NginxDir + "/" + up + ".http.conf;",
			"include " + cfg.Docker.NginxDir + "/" + up + ".server.conf;",
			"proxy_pass http://" + up + ";",
		} {
			if !strings.Contains(string(nginxConf), want) {
				t.Errorf("%s: nginx.conf lacks %q", p.Metadata.Name, want)
			}
		}
		if !strings.Contains(strings.Join(router.Command, " "), up+".http.conf") {
			t.Errorf("%s: the router does not wait for %s.http.conf: %v", p.Metadata.Name, up, router.Command)
		}
		if len(p.Spec.Features) > 0 {
			flagd := f.Services["flagd"]
			file := strings.ReplaceAll(filepath.Base(cfg.Docker.FlagsPath), "{plan}", p.Metadata.Name)
			at := mount(flagd.Volumes, "flags")
			if mount(d.Volumes, "flags") != flagsDir || !slices.Contains(flagd.Command, "file:"+at+"/"+file) {
				t.Errorf("%s: flagd (%v, volume at %q) does not serve %s from the daemon's %s", p.Metadata.Name, flagd.Command, at, file, flagsDir)
			}
		}
	}
}
