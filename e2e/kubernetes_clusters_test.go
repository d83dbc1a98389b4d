package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
)

// TestKubernetesTwoClusters: one daemon drives plans on two API servers.
// Its configuration names both, a (the first, also its default cluster)
// and b (the second, as a context of a kubeconfig holding both); the plan
// on-b names cluster b and its Deployments are on the second API server
// only, the plan on-a names no cluster and its Deployments are on the
// first. Both walk to canary 50% on their own API server, and neither
// leaves anything on the other (each has the other's namespace, empty, so
// a write to the wrong one would show). A third plan names a cluster the
// configuration does not have: it waits, its reason naming that cluster
// and the configured ones. Pre-check says which cluster each plan was
// reached on.
func TestKubernetesTwoClusters(t *testing.T) {
	t.Parallel()
	c := twoClusterApps(t, "a-", "b-")
	cfgA, cfgB, kubeA, kubeB, nsA, nsB := c.cfgA, c.cfgB, c.kubeA, c.kubeB, c.nsA, c.nsB
	// Each namespace on both API servers: a write to the wrong one would
	// show.
	k8stest.NamespaceNamed(t, cfgA, nsB)
	k8stest.NamespaceNamed(t, cfgB, nsA)

	e := &env{t: t, dir: t.TempDir()}
	both := filepath.Join(e.dir, "both.kubeconfig")
	mergeKubeconfigs(t, both, map[string]string{"a": k8stest.Kubeconfig(t), "b": k8stest.KubeconfigB(t)})
	e.startGit(t, map[string]string{
		"plans/on-a.yaml":    clusterPlan("on-a", "", nsA),
		"plans/on-b.yaml":    clusterPlan("on-b", "b", nsB),
		"plans/nowhere.yaml": clusterPlan("nowhere", "nowhere", nsA),
	})
	d := e.runClusterDaemon(t, k8stest.Kubeconfig(t), []string{nsA, nsB}, map[string]string{
		"a": "{kubeconfig: " + k8stest.Kubeconfig(t) + "}",
		"b": "{kubeconfig: " + both + ", context: b}",
	})

	for _, name := range []string{"on-a", "on-b"} {
		d.wait(t, name, 2*time.Minute, name+" at rest at canary 50%", func(m daemon.Migration) bool {
			return m.Position == pos(50) && (m.State == "Holding" || m.State == "Completed")
		})
	}
	// Each plan's Deployments moved on its own API server: half the
	// capacity of 4 on each side, every replica ready.
	for _, w := range []struct {
		cluster string
		kube    kubernetes.Interface
		ns      string
	}{{"a", kubeA, nsA}, {"b", kubeB, nsB}} {
		waitFor(t, time.Minute, "cluster "+w.cluster+"'s Deployments at 2 and 2 replicas, ready", func() bool {
			for _, dep := range []string{k8stest.AppStable, k8stest.AppCandidate} {
				x, err := w.kube.AppsV1().Deployments(w.ns).Get(t.Context(), dep, metav1.GetOptions{})
				if err != nil || x.Spec.Replicas == nil || *x.Spec.Replicas != 2 || x.Status.ReadyReplicas != 2 {
					return false
				}
			}
			return true
		})
		evs, err := w.kube.CoreV1().Events(w.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !hasDaemonEvent(evs.Items) {
			t.Errorf("cluster %s: no Event of the daemon's in %s", w.cluster, w.ns)
		}
	}
	// Nothing of either plan on the other API server: no Deployment, no
	// flags ConfigMap, no Event.
	for _, w := range []struct {
		cluster string
		kube    kubernetes.Interface
		ns      string
	}{{"a", kubeA, nsB}, {"b", kubeB, nsA}} {
		deps, err := w.kube.AppsV1().Deployments(w.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cms, err := w.kube.CoreV1().ConfigMaps(w.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := w.kube.CoreV1().Events(w.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var written []string
		for _, x := range deps.Items {
			written = append(written, "deployment "+x.Name)
		}
		for _, x := range cms.Items {
			if x.Name != "kube-root-ca.crt" {
				written = append(written, "configmap "+x.Name)
			}
		}
		for _, x := range evs.Items {
			written = append(written, "event "+x.Reason+" on "+x.InvolvedObject.Name)
		}
		if len(written) > 0 {
			t.Errorf("cluster %s, namespace %s, which no plan on it names: %s", w.cluster, w.ns, strings.Join(written, ", "))
		}
	}

	m := d.wait(t, "nowhere", 30*time.Second, "nowhere waiting, saying why", func(m daemon.Migration) bool {
		return m.State == "Waiting" && strings.Contains(m.Reason, `"nowhere"`)
	})
	want := `plan nowhere names the cluster "nowhere", which is not in the daemon's kubernetes.clusters (it lists a, b)`
	if !strings.Contains(m.Reason, want) || !m.Position.IsStart() {
		t.Errorf("nowhere: %s %s %q; want Waiting at start, the reason saying %q", m.Position, m.State, m.Reason, want)
	}

	// Pre-check, through the API, says where each plan was reached.
	res := precheck(t, d, "driver")
	got := map[string]string{}
	for _, it := range res.Checks {
		got[it.Plan+" "+it.Subject] = it.Result + ": " + it.Message
	}
	for key, want := range map[string]string{
		"on-a kubernetes (default cluster)":    "ok: opened",
		"on-a observe":                         "ok: the workloads answer on the default cluster",
		"on-b kubernetes (cluster b)":          "ok: opened",
		"on-b observe":                         "ok: the workloads answer on cluster b",
		"nowhere kubernetes (cluster nowhere)": "failed: open the kubernetes driver of nowhere: " + want,
	} {
		if got[key] != want {
			t.Errorf("pre-check %s: %q, want %q", key, got[key], want)
		}
	}
	if res.OK {
		t.Error("pre-check passed with a plan on an unknown cluster")
	}
}

// twoClusters are an app's Deployments on each of the two test API
// servers, each in a namespace of its own.
type twoClusters struct {
	cfgA, cfgB   *rest.Config
	kubeA, kubeB kubernetes.Interface
	nsA, nsB     string
}

// twoClusterApps starts k8stest's app, 4 replicas, on the first API server
// in a namespace named with prefixA and on the second with prefixB.
func twoClusterApps(t *testing.T, prefixA, prefixB string) twoClusters {
	t.Helper()
	c := twoClusters{cfgA: k8stest.Env(t), cfgB: k8stest.EnvB(t)}
	c.kubeA, c.kubeB = k8stest.Client(t, c.cfgA), k8stest.Client(t, c.cfgB)
	base := k8stest.NameFor(t.Name())
	c.nsA, c.nsB = prefixA+base, prefixB+base
	k8stest.NamespaceNamed(t, c.cfgA, c.nsA)
	k8stest.NamespaceNamed(t, c.cfgB, c.nsB)
	k8stest.NewApp(t, c.cfgA, c.nsA, k8stest.AppOptions{Replicas: 4})
	k8stest.NewApp(t, c.cfgB, c.nsB, k8stest.AppOptions{Replicas: 4})
	return c
}

// runClusterDaemon starts a daemon over e's repository whose default
// kubeconfig is kubeconfig, allowed in namespaces, with clusters (name to
// its block, in YAML flow style).
func (e *env) runClusterDaemon(t *testing.T, kubeconfig string, namespaces []string, clusters map[string]string) *daemonProc {
	t.Helper()
	var blocks strings.Builder
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		fmt.Fprintf(&blocks, "    %s: %s\n", name, clusters[name])
	}
	port := dockertest.FreePort(t)
	return e.runDaemon(t, port, fmt.Sprintf(`repo: %s
dataDir: %s
listen: 127.0.0.1:%d
poll: 1s
interval: 1s
statusInterval: 2s
kubernetes:
  kubeconfig: %s
  namespaces: [%s]
  clusters:
%slog: {level: debug}
`, e.repoURL, filepath.Join(e.dir, "data"), port, kubeconfig, strings.Join(namespaces, ", "), blocks.String()))
}

// clusterPlan is a plan named name on cluster (none if empty), moving
// k8stest.NewApp's Deployments in ns by replica ratio through canary 25%
// and 50%, soaking a second at each.
func clusterPlan(name, cluster, ns string) string {
	if cluster != "" {
		cluster = "\n      cluster: " + cluster
	}
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: %s
spec:
  target: {phase: canary, percentage: 50}
  driver:
    kubernetes:%s
      namespace: %s
      stable: {deployment: %s}
      candidate: {deployment: %s}
  phases:
    - name: canary
      steps: [25, 50]
      soak: 1s
`, name, cluster, ns, k8stest.AppStable, k8stest.AppCandidate)
}

// mergeKubeconfigs writes to path one kubeconfig with a context for each
// file of files (context name to kubeconfig file): that file's current
// context, renamed.
func mergeKubeconfigs(t *testing.T, path string, files map[string]string) {
	t.Helper()
	out := clientcmdapi.NewConfig()
	for name, file := range files {
		c, err := clientcmd.LoadFromFile(file)
		if err != nil {
			t.Fatal(err)
		}
		ctx, ok := c.Contexts[c.CurrentContext]
		if !ok {
			t.Fatalf("%s: no current context", file)
		}
		out.Clusters[name] = c.Clusters[ctx.Cluster]
		out.AuthInfos[name] = c.AuthInfos[ctx.AuthInfo]
		out.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
		if out.CurrentContext == "" || name < out.CurrentContext {
			out.CurrentContext = name
		}
	}
	if err := clientcmd.WriteToFile(*out, path); err != nil {
		t.Fatal(err)
	}
}

// hasDaemonEvent reports whether events hold one the daemon wrote.
func hasDaemonEvent(events []corev1.Event) bool {
	for _, e := range events {
		if e.Source.Component == "hal9-migrate" {
			return true
		}
	}
	return false
}

// precheck runs a pre-check of components through the daemon's API.
func precheck(t *testing.T, d *daemonProc, components string) daemon.PrecheckResult {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, d.url+"/api/v1/precheck?components="+components, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer e2e-token")
	res, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out daemon.PrecheckResult
	if res.StatusCode != http.StatusOK {
		t.Fatalf("pre-check: %s", res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
