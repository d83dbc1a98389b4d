// Package deploy holds what deploys the daemon: its image (Dockerfile),
// Compose, Kubernetes manifests, alert rules and dashboards. Its test builds
// the image and runs it.
package deploy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/gittest"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// TestImage builds the daemon's image with make image, as a user would, and
// runs it over a plan repository: it reports its version, serves readiness
// once it has read the plans, and runs as an unprivileged user with a
// writable state folder.
func TestImage(t *testing.T) {
	if err := exec.Command("docker", "info").Run(); err != nil {
		testenv.Missing(t, "the Docker engine does not answer: %v", err)
	}
	tag := fmt.Sprintf("hal9-migrate:test-%d", os.Getpid())
	make := exec.Command("make", "-C", "..", "image", "IMAGE="+tag)
	if out, err := make.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })

	checkLabels(t, tag)

	out, err := exec.Command("docker", "run", "--rm", tag, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hal9-migrate ") {
		t.Fatalf("--version: %v\n%s", err, out)
	}

	plan, err := os.ReadFile("../examples/plans/docker-demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The image has no git binary: a repository on a local path is read
	// and pushed to in process. The daemon runs as its unprivileged user,
	// so the repository is writable by all.
	root := t.TempDir()
	bare := gittest.Bare(t, root, "plans", map[string]string{"plans/demo.yaml": string(plan)})
	if out, err := exec.Command("chmod", "-R", "a+rwX", root).CombinedOutput(); err != nil {
		t.Fatalf("chmod: %v %s", err, out)
	}
	addr := freeAddr(t)
	name := fmt.Sprintf("hal9-migrate-image-test-%d", os.Getpid())
	run := exec.Command("docker", "run", "-d", "--name", name, "--network", "host", "-v", bare+":/plans.git", tag,
		"daemon", "--repo", "/plans.git", "--listen", addr, "--poll", "1s", "--interval", "1s")
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", name).Run() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			logs, _ := exec.Command("docker", "logs", name).CombinedOutput()
			t.Fatalf("the daemon in the image was not ready within 60s:\n%s", logs)
		}
		time.Sleep(250 * time.Millisecond)
	}
	resp, err := http.Get("http://" + addr + "/api/v1/migrations")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Migrations []struct{ Name string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Migrations) != 1 || list.Migrations[0].Name != "docker-demo" {
		t.Fatalf("migrations: %v %+v", err, list)
	}
	// It pushes its status file to the repository.
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := exec.Command("git", "--git-dir", bare, "show", "main:status/docker-demo.yaml").CombinedOutput()
		if err == nil && strings.Contains(string(out), "kind: MigrationStatus") {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := exec.Command("docker", "logs", name).CombinedOutput()
			t.Fatalf("no status file pushed within 30s: %s\n%s", out, logs)
		}
		time.Sleep(250 * time.Millisecond)
	}
	user, _ := exec.Command("docker", "inspect", "-f", "{{.Config.User}}", name).Output()
	if strings.TrimSpace(string(user)) != "65532:65532" {
		t.Errorf("the image runs as %q, want 65532:65532", user)
	}
	// The unprivileged user created the store in the image's state folder.
	if out, err := exec.Command("docker", "cp", name+":/var/lib/hal9-migrate/state.db", "-").Output(); err != nil || len(out) < 4096 {
		t.Errorf("no store in /var/lib/hal9-migrate: %v (%d bytes)", err, len(out))
	}
}

// checkLabels checks the image's OCI annotations: the fixed ones, and the
// version, commit and time make image passes, which must be this
// checkout's.
func checkLabels(t *testing.T, tag string) {
	t.Helper()
	out, err := exec.Command("docker", "image", "inspect", "-f", "{{json .Config.Labels}}", tag).Output()
	if err != nil {
		t.Fatalf("docker image inspect: %v", err)
	}
	var labels map[string]string
	if err := json.Unmarshal(out, &labels); err != nil {
		t.Fatalf("labels %s: %v", out, err)
	}
	const p = "org.opencontainers.image."
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse: %v", err)
	}
	want := map[string]string{
		p + "title":    "hal9-migrate",
		p + "source":   "https://github.com/hal9ai/hal9-migrate",
		p + "revision": strings.TrimSpace(string(rev)),
	}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}
	for _, k := range []string{"description", "licenses", "version", "created"} {
		if labels[p+k] == "" {
			t.Errorf("label %s%s is empty: %v", p, k, labels)
		}
	}
	if c, err := time.Parse(time.RFC3339, labels[p+"created"]); err != nil || c.After(time.Now()) {
		t.Errorf("label %screated = %q: not an RFC 3339 time in the past (%v)", p, labels[p+"created"], err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
