package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/plan"
)

// twoContexts is a kubeconfig with the contexts a (current) and b, each
// on an API server of its own.
const twoContexts = `apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://127.0.0.1:1001"}
- name: b
  cluster: {server: "https://127.0.0.1:1002"}
users:
- name: admin
  user: {token: t0ken}
contexts:
- name: a
  context: {cluster: a, user: admin}
- name: b
  context: {cluster: b, user: admin}
current-context: a
`

// TestLazyCluster: a named cluster is its context (else the current one)
// in its kubeconfig (else kubernetes.kubeconfig); a context the file does
// not have, or a file that is not there, is an error naming the cluster
// and saying what is there instead.
func TestLazyCluster(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(file, []byte(twoContexts), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name        string
		cluster     daemon.ClusterConfig
		defaultFile string
		host, err   string
	}{
		{"ctx", daemon.ClusterConfig{Kubeconfig: file, Context: "b"}, "", "https://127.0.0.1:1002", ""},
		{"current", daemon.ClusterConfig{Kubeconfig: file}, "", "https://127.0.0.1:1001", ""},
		{"default-file", daemon.ClusterConfig{Context: "b"}, file, "https://127.0.0.1:1002", ""},
		{"own-file-first", daemon.ClusterConfig{Kubeconfig: file, Context: "b"}, filepath.Join(dir, "other"), "https://127.0.0.1:1002", ""},
		{"no-context", daemon.ClusterConfig{Kubeconfig: file, Context: "prod"}, "", "",
			`kubernetes.clusters.no-context: context "prod" is not in kubeconfig ` + file + ` (its contexts: a, b)`},
		{"no-file", daemon.ClusterConfig{Kubeconfig: filepath.Join(dir, "missing"), Context: "a"}, "", "",
			`kubernetes.clusters.no-file: kubeconfig ` + filepath.Join(dir, "missing") + `: `},
	} {
		rc, err := lazyCluster(c.name, c.cluster, c.defaultFile)()
		switch {
		case c.err != "":
			if err == nil || !strings.HasPrefix(err.Error(), c.err) {
				t.Errorf("%s: %v, want an error starting %q", c.name, err, c.err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case rc.Host != c.host:
			t.Errorf("%s: host %s, want %s", c.name, rc.Host, c.host)
		}
	}
}

// TestKubernetesOpenerClusters: a plan naming a cluster the configuration
// does not have, or one whose context is not in its kubeconfig, gets an
// error saying so when its driver is opened, before any API server is
// called.
func TestKubernetesOpenerClusters(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(file, []byte(twoContexts), 0o600); err != nil {
		t.Fatal(err)
	}
	c := daemon.DefaultConfig()
	c.DataDir = t.TempDir()
	c.Kubernetes.Kubeconfig = file
	c.Kubernetes.Clusters = map[string]daemon.ClusterConfig{"b": {Context: "b"}, "eu": {Context: "eu-west"}}
	parts, err := openParts(t.Context(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer parts.close()
	open := func(cluster string) error {
		p := &plan.Plan{Metadata: plan.Metadata{Name: "app"}, Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{
			Cluster: cluster, Namespace: "shop",
			Stable: plan.KubernetesWorkload{Deployment: "app-v1"}, Candidate: plan.KubernetesWorkload{Deployment: "app-v2"},
		}}}}
		_, err := parts.open(t.Context(), p)
		return err
	}
	if err := open("nowhere"); err == nil || err.Error() != `plan app names the cluster "nowhere", which is not in the daemon's kubernetes.clusters (it lists b, eu)` {
		t.Errorf("an unknown cluster: %v", err)
	}
	if err := open("eu"); err == nil || err.Error() != `kubernetes.clusters.eu: context "eu-west" is not in kubeconfig `+file+` (its contexts: a, b)` {
		t.Errorf("a context not in the kubeconfig: %v", err)
	}

	c.Kubernetes.Clusters = nil
	parts, err = openParts(t.Context(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer parts.close()
	if err := open("b"); err == nil || err.Error() != `plan app names the cluster "b", which is not in the daemon's kubernetes.clusters (it lists none)` {
		t.Errorf("a cluster with none configured: %v", err)
	}
}
