// Package testenv decides what a test does when a real component it needs
// (git, gpg, the Docker engine, Prometheus, PostgreSQL, a kube-apiserver,
// chromium) is missing from the machine: it skips loudly on a developer's
// machine, and fails in CI, where .ci/run installs and starts every one, so
// that a missing component is a broken CI set-up rather than a quiet pass.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true, as GitHub Actions and
// .ci/run set it).
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing ends the test for want of a component: why says what is missing
// and how to get it. Under CI it fails the test, elsewhere it skips it.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	why := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("%s; .ci/run must provide it", why)
	}
	tb.Skipf("SKIP: %s", why)
}
