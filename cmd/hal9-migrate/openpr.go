package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/forge"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
)

// prFlags say whether and where a committing command opens a pull request
// for the branch it pushed.
type prFlags struct {
	open bool
	base string
	cfg  forge.Config
}

// addOpenPRFlags adds --open-pr and the forge's flags to a committing
// command.
func addOpenPRFlags(cmd *cobra.Command, cf *commitFlags) {
	pf := &prFlags{}
	f := cmd.Flags()
	f.BoolVar(&pf.open, "open-pr", false, "push --branch and open a pull request for it through the forge's API, with the plan diff as its body")
	f.StringVar(&pf.base, "base", "", "the `branch` the pull request goes into (default: the one --branch starts from, main for a URL)")
	f.StringVar(&pf.cfg.Kind, "forge", "", "the forge's `kind`: github, gitlab or gitea (forgejo is gitea); default: told from --repo's host")
	f.StringVar(&pf.cfg.URL, "forge-url", "", "the forge's base `URL` (default: GitHub's API, or https:// and --repo's host)")
	f.StringVar(&pf.cfg.TokenFile, "forge-token-file", "", "a `file` holding the forge's API token (default: --token-file)")
	f.StringVar(&pf.cfg.Repo, "forge-repo", "", "the repository on the forge, `owner/name` (default: from --repo)")
	cmd.Long += `

With --open-pr the commit goes on --branch (which must be named), is
pushed, and a pull request from it into --base is opened through the
forge's API; its body is what 'plan diff --format markdown' says of the
change. An open pull request from the same branch is reused.`
	cf.pr = pf
}

// check refuses --open-pr where no pull request can follow.
func (pf *prFlags) check(cmd *cobra.Command, rf *repoFlags) error {
	if pf == nil || !pf.open {
		return nil
	}
	if rf.branch == "" {
		return &usageError{err: errors.New("--open-pr needs --branch: the branch the pull request is opened from"), command: cmd.CommandPath()}
	}
	return nil
}

// forge opens the configured forge; rf says the repository and its token.
func (pf *prFlags) forge(rf *repoFlags) (forge.Forge, error) {
	c := pf.cfg
	if c.TokenFile == "" {
		c.TokenFile = rf.tokenFile
	}
	c.RepoURL = rf.repo
	return forge.New(c)
}

// baseFor is the branch the pull request of res goes into: --base, else
// the branch res.Branch was created from, else main.
func (pf *prFlags) baseFor(b *gitops.Branch, res gitops.ChangeResult) string {
	for _, base := range []string{pf.base, res.From, b.From()} {
		if base != "" && base != "HEAD" {
			return base
		}
	}
	return "main"
}

// diffMarkdown is 'plan diff --format markdown' of two sets of plans.
func diffMarkdown(before, after []*plan.Plan) (string, error) {
	changes := plan.Compare(before, after)
	var buf bytes.Buffer
	if err := writeMarkdownDiff(&buf, changes); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// pullRequestBody is the body of a pull request hal9-migrate opens: the
// plan diff, then the commit message's body when it has one.
func pullRequestBody(diff, message string) string {
	_, rest, _ := strings.Cut(message, "\n")
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return diff
	}
	return fmt.Sprintf("%s\n---\n\n%s\n", strings.TrimRight(diff, "\n"), rest)
}

// wireForge lets the daemon open the pull requests of its pull-request
// promotions and show each migration's progress as a commit status, on the
// forge cfg.Forge names.
func wireForge(d *daemon.Daemon, cfg daemon.Config) error {
	c := cfg.Forge
	c.RepoURL = cfg.Repo
	f, err := forge.New(c)
	if err != nil {
		return err
	}
	d.OpenPullRequest = func(ctx context.Context, pr daemon.PullRequest) (string, error) {
		diff, err := diffMarkdown(pr.Before, pr.After)
		if err != nil {
			return "", err
		}
		title, _, _ := strings.Cut(pr.Message, "\n")
		return f.OpenPullRequest(ctx, forge.PR{Head: pr.Branch, Base: cfg.Branch, Title: title, Body: pullRequestBody(diff, pr.Message)})
	}
	d.CommitStatus = func(ctx context.Context, s daemon.CommitStatus) error {
		return f.SetCommitStatus(ctx, forge.Status{Commit: s.Commit, State: s.State, Context: "hal9-migrate/" + s.Plan,
			Description: s.Description, TargetURL: c.StatusLink(s.Plan)})
	}
	return nil
}
