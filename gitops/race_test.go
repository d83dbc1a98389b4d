package gitops

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCommitRacesPerson races the daemon's status commits against a person
// pushing with the git CLI from their own clone, round after round, over
// git daemon, and checks that nothing is lost: every person commit and
// every daemon commit is on main, the history is linear, every update of
// main was a fast-forward (the bare repository's reflog), each daemon
// commit touched only its status file, and each person's file survived.
func TestCommitRacesPerson(t *testing.T) {
	for _, transport := range []string{"git", "http"} {
		t.Run(transport, func(t *testing.T) {
			rounds := 100
			if transport != "http" || testing.Short() {
				rounds = 20
			}
			raceRounds(t, transport, rounds)
		})
	}
}

func raceRounds(t *testing.T, transport string, rounds int) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	url := gitDaemon(t, base) + "r.git"
	if transport == "http" {
		url = httpServer(t, base) + "r.git"
	}
	ctx := testContext(t, 8*time.Minute) // minutes of pushes racing on a busy two-core machine
	r, err := Open(ctx, Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var lost []string
	again := 0 // pushes lost right after a fetch: true races, not a stale copy
	r.onRetry = func(attempt int, err error) {
		lost = append(lost, err.Error())
		if attempt > 1 {
			again++
		}
	}
	person := clonePerson(t, url)

	var daemonCommits, personCommits []string
	personRejected := map[string]int{}
	start := time.Now()
	for i := range rounds {
		var (
			wg         sync.WaitGroup
			pushed     string
			rejections []string
			perr       error
		)
		wg.Go(func() { pushed, rejections, perr = personPush(ctx, person, i) })
		h, err := r.Commit(ctx, CommitRequest{
			Message:  fmt.Sprintf("status: round %d", i),
			Author:   daemon,
			Trailers: map[string]string{"Hal9-Migrate-Plan": "hal9"},
			Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
				old, err := read("status/hal9.yaml")
				if err != nil {
					return nil, err
				}
				return map[string][]byte{"status/hal9.yaml": fmt.Appendf(old, "round %d\n", i)}, nil
			},
		})
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: daemon: %v", i, err)
		}
		if perr != nil {
			t.Fatalf("round %d: person: %v", i, perr)
		}
		daemonCommits = append(daemonCommits, string(h))
		personCommits = append(personCommits, pushed)
		for _, r := range rejections {
			personRejected[r]++
		}
	}
	total := 0
	for _, n := range personRejected {
		total += n
	}
	t.Logf("%d rounds over %s in %v: %d daemon pushes refused (%d of them right after a fetch), %d person pushes refused",
		rounds, transport, time.Since(start).Round(time.Millisecond), len(lost), again, total)
	for msg, n := range personRejected {
		t.Logf("git CLI push refused %d times with:\n%s", n, msg)
	}

	// The history: linear, holding every commit either side pushed.
	parents := map[string][]string{}
	for _, line := range strings.Split(run(t, dir, "rev-list", "--parents", "main"), "\n") {
		f := strings.Fields(line)
		parents[f[0]] = f[1:]
		if len(f) > 2 {
			t.Errorf("merge commit %s: the history is not linear", f[0])
		}
	}
	if len(parents) != 1+2*rounds {
		t.Errorf("%d commits on main, want %d", len(parents), 1+2*rounds)
	}
	for i := range rounds {
		if _, ok := parents[daemonCommits[i]]; !ok {
			t.Errorf("round %d: daemon commit %s is not on main", i, daemonCommits[i])
		}
		if _, ok := parents[personCommits[i]]; !ok {
			t.Errorf("round %d: person commit %s is not on main", i, personCommits[i])
		}
	}

	// Every update of main, whoever made it, was a fast-forward.
	isAncestor := func(old, new string) bool {
		for at := new; ; {
			if at == old {
				return true
			}
			p := parents[at]
			if len(p) == 0 {
				return false
			}
			at = p[0]
		}
	}
	updates := reflog(t, dir, "refs/heads/main")
	if len(updates) < 1+2*rounds {
		t.Errorf("%d updates in main's reflog, want at least %d", len(updates), 1+2*rounds)
	}
	for _, u := range updates {
		if u[0] != strings.Repeat("0", 40) && !isAncestor(u[0], u[1]) {
			t.Errorf("main moved from %s to %s: not a fast-forward", u[0], u[1])
		}
	}

	// Each daemon commit changed its one file; each carries the trailer.
	touched := map[string][]string{}
	var commit string
	for _, line := range strings.Split(run(t, dir, "log", "--format=commit %H", "--name-only", "main"), "\n") {
		if h, ok := strings.CutPrefix(line, "commit "); ok {
			commit = h
		} else if line != "" {
			touched[commit] = append(touched[commit], line)
		}
	}
	for i, h := range daemonCommits {
		if got := touched[h]; len(got) != 1 || got[0] != "status/hal9.yaml" {
			t.Errorf("round %d: daemon commit %s touched %v", i, h, got)
		}
		if got := run(t, dir, "log", "-1", "--format=%(trailers:key=Hal9-Migrate-Bot,valueonly)", h); got != "true" {
			t.Errorf("round %d: daemon commit %s has bot trailer %q", i, h, got)
		}
	}
	for i, h := range personCommits {
		if got := touched[h]; len(got) != 1 || got[0] != fmt.Sprintf("people/round-%03d.txt", i) {
			t.Errorf("round %d: person commit %s touched %v", i, h, got)
		}
	}

	// Everything either side wrote is in the final tree: each person's
	// file, and every round of the status history, in order.
	for i := range rounds {
		p := fmt.Sprintf("people/round-%03d.txt", i)
		if got := run(t, dir, "show", "main:"+p); got != fmt.Sprintf("person, round %d", i) {
			t.Errorf("%s = %q", p, got)
		}
	}
	var want strings.Builder
	want.WriteString(strings.TrimSpace(initialFiles["status/hal9.yaml"]))
	for i := range rounds {
		fmt.Fprintf(&want, "\nround %d", i)
	}
	if got := run(t, dir, "show", "main:status/hal9.yaml"); got != want.String() {
		t.Errorf("status file:\n%s\nwant:\n%s", got, want.String())
	}
	for _, s := range lost {
		if !errors.Is(classify(errors.New(s)), ErrNonFastForward) {
			t.Errorf("lost race with an unclassified error: %s", s)
		}
	}
}

// personPush commits a new file in the person's clone and pushes it with
// the git CLI, pulling with rebase and pushing again while the daemon keeps
// winning. It returns the commit that landed and how many pushes were
// rejected.
func personPush(ctx context.Context, dir string, round int) (string, []string, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), gitEnv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	name := fmt.Sprintf("people/round-%03d.txt", round)
	if err := os.MkdirAll(filepath.Join(dir, "people"), 0o755); err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "person, round %d\n", round), 0o644); err != nil {
		return "", nil, err
	}
	if _, err := git("add", name); err != nil {
		return "", nil, err
	}
	if _, err := git("commit", "-q", "-m", fmt.Sprintf("person: round %d", round)); err != nil {
		return "", nil, err
	}
	var rejected []string
	for range 30 {
		_, err := git("push", "-q", "origin", "HEAD:main")
		if err == nil {
			head, err := git("rev-parse", "HEAD")
			return head, rejected, err
		}
		if !strings.Contains(err.Error(), "rejected]") {
			return "", rejected, err
		}
		_, msg, _ := strings.Cut(err.Error(), "\n")
		rejected = append(rejected, hexRun.ReplaceAllString(msg, "<hash>"))
		if _, err := git("pull", "-q", "--rebase", "origin", "main"); err != nil {
			return "", rejected, err
		}
	}
	return "", rejected, errors.New("person: 30 pushes rejected")
}

var hexRun = regexp.MustCompile(`[0-9a-f]{40}`)

// reflog returns the (old, new) pairs of a ref's reflog in a bare
// repository, oldest first.
func reflog(t *testing.T, dir, ref string) [][2]string {
	f, err := os.Open(filepath.Join(dir, "logs", filepath.FromSlash(ref)))
	if err != nil {
		t.Fatalf("read reflog: %v", err)
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			t.Fatalf("reflog line %q", sc.Text())
		}
		out = append(out, [2]string{fields[0], fields[1]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
