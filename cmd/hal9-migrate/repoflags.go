package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
)

// repoFlags say where a command reads plans: which repository, branch,
// folder and plan.
type repoFlags struct {
	repo, branch, path, plan string
	sshKey, knownHosts       string
	tokenFile                string
}

// addRepoFlags adds the flags of every command that reads plans from a
// repository.
func addRepoFlags(cmd *cobra.Command) *repoFlags {
	rf := &repoFlags{}
	f := cmd.Flags()
	f.StringVar(&rf.repo, "repo", "", "the plan repository: a git `URL` or a local clone (default: the git repository around the current directory)")
	f.StringVar(&rf.branch, "branch", "", "the `branch` (default: a local clone's checked-out branch, main for a URL)")
	f.StringVar(&rf.path, "path", "plans", "the plans `folder`, relative to the repository root")
	f.StringVar(&rf.plan, "plan", "", "the plan's `name`, needed when the folder holds more than one")
	f.StringVar(&rf.sshKey, "ssh-key", "", "an SSH private key `file`, for an ssh URL")
	f.StringVar(&rf.knownHosts, "known-hosts", "", "a known_hosts `file` listing the ssh server's host keys")
	f.StringVar(&rf.tokenFile, "token-file", "", "a `file` holding an HTTPS access token")
	return rf
}

func (rf *repoFlags) options() gitops.BranchOptions {
	return gitops.BranchOptions{
		Repo:   rf.repo,
		Branch: rf.branch,
		Path:   rf.path,
		Auth:   gitops.Auth{SSHKeyFile: rf.sshKey, KnownHostsFile: rf.knownHosts, TokenFile: rf.tokenFile},
	}
}

// commitFlags say how a command commits its change.
type commitFlags struct {
	message     string
	yes, push   bool
	from        string
	authorName  string
	authorEmail string
	format      *formatFlag
	pr          *prFlags // nil: the command opens no pull request
}

// addCommitFlags adds the flags of every command that commits a change of
// a plan.
func addCommitFlags(cmd *cobra.Command) *commitFlags {
	cf := &commitFlags{}
	f := cmd.Flags()
	f.StringVarP(&cf.message, "message", "m", "", "the commit `message` (default: one saying what changes, from where to where)")
	f.BoolVar(&cf.yes, "yes", false, "commit without asking (only a terminal is asked)")
	f.BoolVar(&cf.push, "push", false, "push the branch to origin after committing (local clone only: a commit to a URL is always pushed)")
	f.StringVar(&cf.from, "from", "", "the `branch` a new --branch starts from, for a URL (default main)")
	f.StringVar(&cf.authorName, "author-name", "", "the commit author's `name` (default: git's, as said above)")
	f.StringVar(&cf.authorEmail, "author-email", "", "the commit author's `email` (default: git's, as said above)")
	cf.format = addFormatFlag(cmd, "text", "json")
	cmd.Long += "\n\n" + authorHelp
	if b := f.Lookup("branch"); b != nil {
		b.Usage = "the `branch` to commit on (default: a local clone's checked-out branch, main for a URL); one that does not exist is created"
	}
	return cf
}

// Environment variables naming the commit author.
const (
	envAuthorName  = "HAL9_MIGRATE_AUTHOR_NAME"
	envAuthorEmail = "HAL9_MIGRATE_AUTHOR_EMAIL"
)

// operator is the author of commits to a URL when nothing names one.
var operator = gitops.Signature{Name: "hal9-migrate operator", Email: "hal9-migrate@localhost"}

// authorHelp ends the --help of every committing command: who a commit is
// by.
const authorHelp = `The commit is by the author git would name: $GIT_AUTHOR_NAME and
$GIT_AUTHOR_EMAIL, else author.name and author.email, else user.name and
user.email from git's configuration (a local clone's own, then the global
and system files). --author-name and --author-email override it;
$HAL9_MIGRATE_AUTHOR_NAME and $HAL9_MIGRATE_AUTHOR_EMAIL fill in what git
does not name; a commit to a URL with no author named at all is by
"hal9-migrate operator <hal9-migrate@localhost>". The committer is the one
git would name ($GIT_COMMITTER_NAME, committer.name, user.name, and the
same for the email), else the author.`

// identity picks the commit's author and committer as authorHelp says. A
// local clone with no author is an error: git would refuse the commit too.
func (cf *commitFlags) identity(b *gitops.Branch) (gitops.Identity, error) {
	configured, err := b.Identity()
	if err != nil {
		return gitops.Identity{}, err
	}
	a := gitops.Signature{Name: cf.authorName, Email: cf.authorEmail}
	fill(&a, configured.Author)
	fill(&a, gitops.Signature{Name: os.Getenv(envAuthorName), Email: os.Getenv(envAuthorEmail)})
	if a.Name == "" || a.Email == "" {
		if b.Local() {
			return gitops.Identity{}, fmt.Errorf("no commit author: configure one with git config user.name and user.email (or set %s and %s)", envAuthorName, envAuthorEmail)
		}
		fill(&a, operator)
	}
	c := configured.Committer
	fill(&c, a)
	return gitops.Identity{Author: a, Committer: c}, nil
}

// fill sets the empty fields of a from b.
func fill(a *gitops.Signature, b gitops.Signature) {
	if a.Name == "" {
		a.Name = b.Name
	}
	if a.Email == "" {
		a.Email = b.Email
	}
}

// openPlan opens the branch and finds the plan to work on: the one named by
// --plan, or the only one there is.
func openPlan(cmd *cobra.Command, rf *repoFlags, o gitops.BranchOptions) (*gitops.Branch, *plan.Plan, *plan.Validator, error) {
	v, err := plan.NewValidator()
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := gitops.OpenBranch(cmd.Context(), o)
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := choosePlan(cmd, b, v, rf.plan)
	if err != nil {
		return nil, nil, nil, err
	}
	return b, p, v, nil
}

// choosePlan validates the plans on the branch and returns the one named
// name, or the only one when name is empty.
func choosePlan(cmd *cobra.Command, b *gitops.Branch, v *plan.Validator, name string) (*plan.Plan, error) {
	stderr := cmd.ErrOrStderr()
	set := v.Validate(b.Files())
	where := where(cmd, b)
	var names []string
	for _, p := range set.Plans {
		names = append(names, p.Metadata.Name)
	}
	if name != "" {
		if p := set.Lookup(name); p != nil {
			return p, nil
		}
		if len(set.Errors) > 0 {
			printErrors(stderr, set.Errors)
			return nil, fmt.Errorf("no valid plan named %q in %s (%s above)", name, where, plural(len(set.Errors), "error"))
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("no plan named %q: no plans in %s%s", name, where, pathHint)
		}
		return nil, fmt.Errorf("no plan named %q in %s; it holds %s", name, where, strings.Join(names, ", "))
	}
	if len(set.Errors) > 0 {
		printErrors(stderr, set.Errors)
		return nil, fmt.Errorf("%s in %s: fix them first", plural(len(set.Errors), "error"), where)
	}
	switch len(names) {
	case 0:
		return nil, fmt.Errorf("no plans in %s%s", where, pathHint)
	case 1:
		return set.Plans[0], nil
	}
	return nil, &usageError{
		err:     fmt.Errorf("%s holds %d plans (%s): name one with --plan", where, len(names), strings.Join(names, ", ")),
		command: cmd.CommandPath(),
	}
}

// pathHint follows "no plans in FOLDER": the folder is relative to the
// repository root, not to the current directory, and is plans only by
// default.
const pathHint = " (--path names the plans folder, relative to the repository root)"

// where names the plans folder and branch, as in "plans on branch main".
func where(cmd *cobra.Command, b *gitops.Branch) string {
	path, _ := cmd.Flags().GetString("path")
	s := path + " on branch " + b.Name()
	if !b.Exists() {
		s += " (new, from " + b.From() + ")"
	}
	return s
}
