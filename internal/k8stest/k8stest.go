// Package k8stest gives tests a real Kubernetes API server: the one
// HAL9_TEST_KUBECONFIG names (what .ci/run starts with
// scripts/k8s-testenv.sh), or else one this test binary starts through
// that script in a temporary directory and that stops when the binary
// exits. Each test gets a fresh namespace, deleted when it ends.
//
// The script starts a second cluster beside the first (another API server
// with its own objects, nodes and controllers), for tests of a daemon
// driving several: EnvB and KubeconfigB give it, from
// HAL9_TEST_KUBECONFIG_B, or else from the environment this test binary
// starts.
//
// Without HAL9_TEST_KUBECONFIG, a test skips, saying why, when the control
// plane cannot be started here (its binaries are not built: that takes
// 15 to 30 minutes, longer than a test may); under CI=true it fails
// instead, so that nothing skips in CI.
//
// It is test equipment: nothing in the product imports it.
package k8stest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// KubeconfigEnv names the kubeconfig of a running test API server, and
// KubeconfigBEnv that of the second cluster started beside it.
const (
	KubeconfigEnv  = "HAL9_TEST_KUBECONFIG"
	KubeconfigBEnv = "HAL9_TEST_KUBECONFIG_B"
)

// exitNotBuilt is the script's exit status when its binaries are missing
// and it was told not to build them.
const exitNotBuilt = 3

var (
	once        sync.Once
	kubeconfig  string
	kubeconfigB string
	envErr      error
	notBuilt    bool
)

// Env returns a client configuration for the test API server, starting one
// if HAL9_TEST_KUBECONFIG is not set.
func Env(t testing.TB) *rest.Config {
	t.Helper()
	return restConfig(t, Kubeconfig(t))
}

// EnvB returns a client configuration for the second test cluster,
// starting the test environment if HAL9_TEST_KUBECONFIG_B is not set.
func EnvB(t testing.TB) *rest.Config {
	t.Helper()
	return restConfig(t, KubeconfigB(t))
}

func restConfig(t testing.TB, path string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("k8stest: read kubeconfig %s: %v", path, err)
	}
	// Tests poll; client-go's default of 5 requests a second would make
	// them wait on the client, not on the server.
	cfg.QPS, cfg.Burst = 200, 400
	return cfg
}

// Kubeconfig returns the path of the test API server's kubeconfig (an
// administrator's), starting the server if HAL9_TEST_KUBECONFIG is not set.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(KubeconfigEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("k8stest: %s=%s: %v", KubeconfigEnv, p, err)
		}
		return p
	}
	started(t, KubeconfigEnv)
	return kubeconfig
}

// KubeconfigB returns the path of the second test cluster's kubeconfig
// (an administrator's): HAL9_TEST_KUBECONFIG_B, else the second cluster of
// the environment this test binary starts (even when HAL9_TEST_KUBECONFIG
// is set: a cluster of its own, then, whatever the first one is).
func KubeconfigB(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(KubeconfigBEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("k8stest: %s=%s: %v", KubeconfigBEnv, p, err)
		}
		return p
	}
	started(t, KubeconfigBEnv)
	return kubeconfigB
}

// started starts the test environment once per test binary, or skips or
// fails t, saying why, when it cannot; env is the variable that would
// have named a running one.
func started(t testing.TB, env string) {
	t.Helper()
	once.Do(start)
	if envErr != nil {
		msg := fmt.Sprintf("k8stest: no Kubernetes API server for this test: %v", envErr)
		if !notBuilt {
			msg += " (set " + env + " to use a running one)"
		}
		testenv.Missing(t, "%s", msg)
	}
}

// Script returns the path of scripts/k8s-testenv.sh in this repository.
func Script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "k8s-testenv.sh")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("no %s in the module root", p)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the module: no go.mod above the working directory")
		}
		dir = parent
	}
}

// start runs the script in a directory of its own, with a watchdog that
// stops the control plane when this process exits.
func start() {
	script, err := Script()
	if err != nil {
		envErr = err
		return
	}
	dir, err := os.MkdirTemp("", "hal9-k8stest-")
	if err != nil {
		envErr = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "start")
	cmd.Env = append(os.Environ(),
		"HAL9_K8S_DIR="+dir,
		"HAL9_K8S_NO_BUILD=1",
		"HAL9_K8S_OWNER_PID="+strconv.Itoa(os.Getpid()),
		"HAL9_K8S_OWNER_REMOVE_DIR=1",
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == exitNotBuilt {
			notBuilt = true
		}
		envErr = fmt.Errorf("%s start (logs in %s/run): %v\n%s", script, dir, err, lastLines(stderr.String(), 30))
		if notBuilt {
			_ = os.RemoveAll(dir)
		}
		return
	}
	kubeconfig = strings.TrimSpace(string(out))
	// The script writes the second cluster's beside the first's.
	kubeconfigB = filepath.Join(filepath.Dir(kubeconfig), "kubeconfig-b")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Bin returns the directory of the test environment's binaries (kubectl
// among them), skipping or failing the test like Env when it cannot.
func Bin(t testing.TB) string {
	t.Helper()
	script, err := Script()
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(script, "bin")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := fmt.Sprintf("k8stest: %s bin: %v: %s", script, err, stderr.String())
		testenv.Missing(t, "%s", msg)
	}
	return strings.TrimSpace(string(out))
}

// Client returns a clientset for cfg.
func Client(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	return c
}

// Namespace creates a namespace for this test, named after it, and deletes
// it when the test ends.
func Namespace(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	name := NameFor(t.Name())
	NamespaceNamed(t, cfg, name)
	return name
}

// NamespaceNamed creates the namespace name, and deletes it when the test
// ends: the same name on two clusters, say.
func NamespaceNamed(t testing.TB, cfg *rest.Config, name string) {
	t.Helper()
	c := Client(t, cfg)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"hal9.ai/test": "true"}}}
	if _, err := c.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("k8stest: create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := c.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("k8stest: delete namespace %s: %v", name, err)
		}
	})
}

// NameFor makes a DNS-1123 label from a test name, with a random suffix so
// that reruns and parallel tests never collide.
func NameFor(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	base := strings.Trim(b.String(), "-")
	for strings.Contains(base, "--") {
		base = strings.ReplaceAll(base, "--", "-")
	}
	if len(base) > 50 {
		base = strings.TrimRight(base[:50], "-")
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	if base == "" {
		base = "test"
	}
	return base + "-" + hex.EncodeToString(suffix)
}
