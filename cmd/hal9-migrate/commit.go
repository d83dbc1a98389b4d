package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/hal9ai/hal9-migrate/forge"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
)

// decision is what a command wants done to a plan, decided from the plan as
// it is on the branch.
type decision struct {
	edits []plan.FileEdit
	// subject is the commit message's first line, and body the paragraphs
	// after it, when --message is not given.
	subject, body string
	trailers      map[string]string
	// refusal, when set, refuses a change that is valid but must not be
	// made as asked (it goes back past a point of no return). It is
	// reported only once the result has validated, so that a plain
	// mistake, such as a phase the plan does not have, is reported as
	// such.
	refusal error
}

// decider decides a change from the plan as it is on the branch. It is
// called again if the branch moved before the commit was pushed.
type decider func(p *plan.Plan) (decision, error)

// changeOutput is what a committing command prints with -o json.
type changeOutput struct {
	Commit  string `json:"commit"`
	Branch  string `json:"branch"`
	Created bool   `json:"created,omitempty"`
	File    string `json:"file"`
	Change  string `json:"change"`
	Pushed  bool   `json:"pushed"`
	// PullRequest is the URL of the pull request --open-pr opened.
	PullRequest string `json:"pullRequest,omitempty"`
}

// errAborted is returned when the person answers no to the prompt.
var errAborted = errors.New("aborted: nothing committed")

// runChange opens the branch, finds the plan, makes the change decide asks
// for, validates the result and commits it.
func runChange(cmd *cobra.Command, rf *repoFlags, cf *commitFlags, decide decider) error {
	if err := cf.pr.check(cmd, rf); err != nil {
		return err
	}
	o := rf.options()
	o.From, o.Push = cf.from, cf.push
	openPR := cf.pr != nil && cf.pr.open
	if openPR {
		o.Push = true // the pull request needs the branch on the remote
	}
	b, p, v, err := openPlan(cmd, rf, o)
	if err != nil {
		return err
	}
	if cf.push && !b.Local() {
		return &usageError{err: errors.New("--push is for a local clone: a commit to a URL is always pushed"), command: cmd.CommandPath()}
	}
	who, err := cf.identity(b)
	if err != nil {
		return err
	}
	file := p.File
	var invalid plan.Errors
	var before, after *plan.Plan // for a pull request's body
	var message string
	edit := func(data []byte) (gitops.Edited, error) {
		invalid = nil
		cur, err := v.ValidateOne(plan.Source{Path: file, Data: data})
		if err != nil {
			return gitops.Edited{}, fmt.Errorf("%s is not valid on branch %s: %w", file, b.Name(), err)
		}
		d, err := decide(cur)
		if err != nil {
			return gitops.Edited{}, err
		}
		out, err := plan.ApplyEdits(file, data, d.edits...)
		if err != nil {
			return gitops.Edited{}, err
		}
		var change []string
		for _, e := range d.edits {
			change = append(change, e.String())
		}
		e := gitops.Edited{Data: out, Change: strings.Join(change, "; ")}
		next, err := v.ValidateOne(plan.Source{Path: file, Data: out})
		if err != nil {
			if errs, ok := errors.AsType[plan.Errors](err); ok {
				invalid = errs
			}
			return e, fmt.Errorf("%s would leave %s invalid; nothing committed", e.Change, file)
		}
		before, after = cur, next
		if d.refusal != nil {
			return e, d.refusal
		}
		e.Message = cf.message
		if e.Message == "" {
			e.Message = d.subject
			if d.body != "" {
				e.Message += "\n\n" + wrap(d.body, 72)
			}
		}
		e.Trailers = d.trailers
		message = e.Message
		return e, nil
	}
	res, err := b.Change(cmd.Context(), gitops.ChangeRequest{
		File:      file,
		Edit:      edit,
		Author:    who.Author,
		Committer: who.Committer,
		Confirm:   func(e gitops.Edited) error { return confirm(cmd, cf, b, p, e) },
	})
	if invalid != nil {
		printErrors(cmd.ErrOrStderr(), invalid)
	}
	if openPR && err == nil && res.Commit != "" && res.Pushed {
		return openPullRequest(cmd, rf, cf, b, res, message, before, after)
	}
	if res.Commit != "" {
		// Report the commit even when the push after it failed.
		if werr := writeChange(cmd.OutOrStdout(), cf.format.value, b, res); werr != nil && err == nil {
			err = werr
		}
		return err
	}
	if err != nil {
		return err
	}
	return writeChange(cmd.OutOrStdout(), cf.format.value, b, res)
}

// openPullRequest reports the commit, then opens its pull request and says
// where it is.
func openPullRequest(cmd *cobra.Command, rf *repoFlags, cf *commitFlags, b *gitops.Branch, res gitops.ChangeResult, message string, before, after *plan.Plan) error {
	title, _, _ := strings.Cut(message, "\n")
	if cf.format.value != "json" {
		if err := writeChange(cmd.OutOrStdout(), cf.format.value, b, res); err != nil {
			return err
		}
	}
	diff, err := diffMarkdown([]*plan.Plan{before}, []*plan.Plan{after})
	if err != nil {
		return err
	}
	f, err := cf.pr.forge(rf)
	if err != nil {
		return fmt.Errorf("committed and pushed, but the pull request was not opened: %w", err)
	}
	u, err := f.OpenPullRequest(cmd.Context(), forge.PR{Head: res.Branch, Base: cf.pr.baseFor(b, res),
		Title: title, Body: pullRequestBody(diff, message)})
	if err != nil {
		return fmt.Errorf("committed and pushed, but the pull request was not opened: %w", err)
	}
	if cf.format.value == "json" {
		return writeJSON(cmd.OutOrStdout(), changeOutput{Commit: string(res.Commit), Branch: res.Branch, Created: res.Created,
			File: res.File, Change: res.Change, Pushed: res.Pushed, PullRequest: u})
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "opened pull request %s\n", u)
	return err
}

// confirm asks before committing, when standard input is a terminal and
// --yes was not given.
func confirm(cmd *cobra.Command, cf *commitFlags, b *gitops.Branch, p *plan.Plan, e gitops.Edited) error {
	in, ok := cmd.InOrStdin().(*os.File)
	if cf.yes || !ok || !term.IsTerminal(int(in.Fd())) {
		return nil
	}
	stderr := cmd.ErrOrStderr()
	fmt.Fprintf(stderr, "%s (%s) on branch %s", p.Metadata.Name, p.File, b.Name())
	if !b.Exists() {
		fmt.Fprintf(stderr, " (new, from %s)", b.From())
	}
	fmt.Fprintf(stderr, ": %s\n", e.Change)
	if b.Local() {
		fmt.Fprint(stderr, "Commit this change? [y/N] ")
	} else {
		fmt.Fprint(stderr, "Commit and push this change? [y/N] ")
	}
	answer, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errAborted
}

// writeChange reports a commit, or that there was nothing to commit.
func writeChange(w io.Writer, format string, b *gitops.Branch, res gitops.ChangeResult) error {
	if format == "json" {
		return writeJSON(w, changeOutput{
			Commit:  string(res.Commit),
			Branch:  res.Branch,
			Created: res.Created,
			File:    res.File,
			Change:  res.Change,
			Pushed:  res.Pushed,
		})
	}
	if res.Commit == "" {
		_, err := fmt.Fprintf(w, "nothing to commit: %s leaves %s as it is on %s\n", res.Change, res.File, res.Branch)
		return err
	}
	branch := res.Branch
	if res.Created {
		branch += " (new branch from " + res.From + ")"
	}
	if _, err := fmt.Fprintf(w, "committed %s on %s: %s (%s)\n", shorthash.Of(res.Commit.String()), branch, res.Change, res.File); err != nil {
		return err
	}
	if res.Pushed {
		_, err := fmt.Fprintf(w, "pushed to %s\n", b.Remote())
		return err
	}
	return nil
}

// wrap breaks text into lines of at most width characters, at spaces, as
// commit message bodies are written.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(text) {
		switch {
		case i == 0:
		case n+1+len([]rune(word)) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len([]rune(word))
	}
	return b.String()
}
