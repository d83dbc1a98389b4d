package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubernetesNamespacesLayers checks the one list-valued daemon flag
// through the layers: the file's list, replaced by the variable's, replaced
// by the flag's; and a bad name is a usage error.
func TestKubernetesNamespacesLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte("repo: file:///plans\nkubernetes: {namespaces: [from, file]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	namespaces := func(env string, args ...string) (string, error) {
		t.Setenv("HAL9_MIGRATE_KUBERNETES_NAMESPACES", env)
		if env == "" {
			os.Unsetenv("HAL9_MIGRATE_KUBERNETES_NAMESPACES")
		}
		cmd := newDaemonCmd()
		if err := cmd.ParseFlags(append([]string{"--config", file}, args...)); err != nil {
			t.Fatal(err)
		}
		err := cmd.PreRunE(cmd, nil)
		return cmd.Flags().Lookup("kubernetes-namespaces").Value.String(), err
	}
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, "from,file"},
		{"hal9, shop", nil, "hal9,shop"},
		{"hal9,shop", []string{"--kubernetes-namespaces", "flag-a,flag-b"}, "flag-a,flag-b"},
	} {
		if got, err := namespaces(c.env, c.args...); err != nil || got != c.want {
			t.Errorf("env %q args %q: %q, %v; want %q", c.env, c.args, got, err, c.want)
		}
	}
	if _, err := namespaces("Shop"); err == nil || !strings.Contains(err.Error(), `kubernetes.namespaces: "Shop" is not a namespace name`) {
		t.Errorf("a bad namespace: %v", err)
	}
}
