package gitops

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// repo is a real Git repository made with the git CLI in a temporary
// directory.
type repo struct {
	t   *testing.T
	dir string
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(t, "git CLI not found: %v (install git to run the gitops tests)", err)
	}
	r := &repo{t: t, dir: t.TempDir()}
	r.git("init", "-q", "-b", "main")
	return r
}

func (r *repo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", append([]string{"-C", r.dir}, args...)...)
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func (r *repo) write(name, content string) {
	r.t.Helper()
	full := filepath.Join(r.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *repo) commit(msg string) string {
	r.t.Helper()
	r.git("add", "-A")
	r.git("commit", "-q", "-m", msg)
	return r.git("rev-parse", "HEAD")
}

// read returns the sources as "path=content" strings, with Discovered
// marked by a trailing "*".
func read(t *testing.T, dir, rev, p string) []string {
	t.Helper()
	sources, err := ReadPlans(dir, rev, p)
	if err != nil {
		t.Fatalf("ReadPlans(%q, %q, %q): %v", dir, rev, p, err)
	}
	return describe(sources)
}

func describe(sources []plan.Source) []string {
	out := []string{}
	for _, s := range sources {
		d := filepath.ToSlash(s.Path) + "=" + string(s.Data)
		if s.Discovered {
			d += "*"
		}
		out = append(out, d)
	}
	return out
}

func TestReadPlans(t *testing.T) {
	r := newRepo(t)
	r.write("plans/a.yaml", "a1")
	r.write("plans/b.json", "b1")
	r.write("plans/README.md", "not a plan")
	r.write("plans/.hidden/x.yaml", "hidden")
	r.write("plans/team/c.cue", "c1")
	r.write("other/d.yaml", "d1")
	first := r.commit("first")
	r.git("tag", "-a", "v1", "-m", "v1")

	r.write("plans/a.yaml", "a2")
	r.write("plans/e.yml", "e2")
	if err := os.Remove(filepath.Join(r.dir, "plans/b.json")); err != nil {
		t.Fatal(err)
	}
	r.commit("second")
	// A remote-tracking branch, as a fetch would leave it.
	r.git("update-ref", "refs/remotes/origin/main", first)
	// Uncommitted changes are not read.
	r.write("plans/a.yaml", "a3")

	sub := filepath.Join(r.dir, "plans")
	tests := []struct {
		name, dir, rev, path string
		want                 []string
	}{
		{"previous commit", r.dir, "HEAD~1", "plans",
			[]string{"plans/a.yaml=a1*", "plans/b.json=b1*", "plans/team/c.cue=c1*"}},
		{"head", r.dir, "HEAD", "plans",
			[]string{"plans/a.yaml=a2*", "plans/e.yml=e2*", "plans/team/c.cue=c1*"}},
		{"branch", r.dir, "main", "plans",
			[]string{"plans/a.yaml=a2*", "plans/e.yml=e2*", "plans/team/c.cue=c1*"}},
		{"annotated tag", r.dir, "v1", "plans/team",
			[]string{"plans/team/c.cue=c1*"}},
		{"hash", r.dir, first, "other", []string{"other/d.yaml=d1*"}},
		{"short hash", r.dir, first[:10], "other", []string{"other/d.yaml=d1*"}},
		{"remote branch", r.dir, "origin/main", "plans/b.json", []string{"plans/b.json=b1"}},
		{"single file", r.dir, "HEAD", "plans/a.yaml", []string{"plans/a.yaml=a2"}},
		{"file that is not a plan", r.dir, "HEAD", "plans/README.md", []string{}},
		{"from a subdirectory", sub, "HEAD~1", ".",
			[]string{"a.yaml=a1*", "b.json=b1*", "team/c.cue=c1*"}},
		{"from a subdirectory, going up", sub, "HEAD", "../other", []string{"../other/d.yaml=d1*"}},
		{"whole repository", r.dir, "HEAD~1", ".",
			[]string{"other/d.yaml=d1*", "plans/a.yaml=a1*", "plans/b.json=b1*", "plans/team/c.cue=c1*"}},
		{"missing path", r.dir, "HEAD", "nothing/here", []string{}},
		{"file deleted since", r.dir, "HEAD", "plans/b.json", []string{}},
		{"path below a file", r.dir, "HEAD", "plans/a.yaml/x", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := read(t, tt.dir, tt.rev, tt.path)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestReadPlansErrors(t *testing.T) {
	r := newRepo(t)
	r.write("plans/a.yaml", "a1")
	r.commit("first")

	tests := []struct {
		name, dir, rev, path, want string
	}{
		{"unknown revision", r.dir, "no-such-branch", "plans", `resolve revision "no-such-branch"`},
		{"before the first commit", r.dir, "HEAD~1", "plans", `resolve revision "HEAD~1"`},
		{"outside the repository", r.dir, "HEAD", "../elsewhere", "is not inside the repository"},
		{"not a repository", t.TempDir(), "HEAD", "plans", "open git repository around"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadPlans(tt.dir, tt.rev, tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadPlans(%q, %q, %q) = %v, want an error containing %q", tt.dir, tt.rev, tt.path, err, tt.want)
			}
		})
	}
}

// TestReadPlansValidate checks that what ReadPlans returns is what the
// validator expects: a plan at an older revision validates, and a file of
// another kind found in a directory is skipped.
func TestReadPlansValidate(t *testing.T) {
	r := newRepo(t)
	r.write("plans/demo.yaml", demoPlan("10"))
	r.write("plans/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")
	r.commit("first")
	r.write("plans/demo.yaml", demoPlan("25"))
	r.commit("advance")

	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for rev, want := range map[string]string{"HEAD~1": "canary 10%", "HEAD": "canary 25%"} {
		sources, err := ReadPlans(r.dir, rev, "plans")
		if err != nil {
			t.Fatal(err)
		}
		set := v.Validate(sources)
		if len(set.Errors) > 0 {
			t.Fatalf("%s: %v", rev, set.Errors)
		}
		if set.Files != 1 || len(set.Plans) != 1 {
			t.Fatalf("%s: got %d files and %d plans, want 1 and 1", rev, set.Files, len(set.Plans))
		}
		if got := set.Plans[0].TargetPosition().String(); got != want {
			t.Errorf("%s: target %s, want %s", rev, got, want)
		}
		if got := filepath.ToSlash(set.Plans[0].File); got != "plans/demo.yaml" {
			t.Errorf("%s: file %s, want plans/demo.yaml", rev, got)
		}
	}
}

func demoPlan(pct string) string {
	return `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: demo
spec:
  target: {phase: canary, percentage: ` + pct + `}
  driver:
    docker:
      stable: {service: demo-stable}
      candidate: {service: demo-candidate}
  phases:
    - name: canary
      steps: [10, 25, 50]
      soak: 30s
    - name: full
      steps: [100]
`
}
