package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// apiFlags say how a command reaches the daemon's API.
type apiFlags struct {
	daemon, plan, tokenFile string
}

func addAPIFlags(cmd *cobra.Command) *apiFlags {
	af := &apiFlags{}
	f := cmd.Flags()
	f.StringVar(&af.daemon, "daemon", os.Getenv(envDaemon), "the daemon's `URL` (default $HAL9_MIGRATE_DAEMON)")
	f.StringVar(&af.plan, "plan", "", "the migration's `name`, needed when the daemon follows more than one")
	f.StringVar(&af.tokenFile, "api-token-file", "", "a `file` holding the daemon's API token (default $HAL9_MIGRATE_API_TOKEN)")
	return af
}

// client is a small client of the daemon's API.
type client struct {
	base, token string
	// wait bounds each request (default 2 minutes).
	wait time.Duration
}

func (af *apiFlags) client(cmd *cobra.Command, needToken bool) (*client, error) {
	if af.daemon == "" {
		return nil, &usageError{err: fmt.Errorf("this command asks the daemon: set --daemon or $%s", envDaemon), command: cmd.CommandPath()}
	}
	c := &client{base: strings.TrimRight(af.daemon, "/")}
	if needToken {
		tok, err := af.token(cmd, "this command changes the daemon's state")
		if err != nil {
			return nil, err
		}
		c.token = tok
	}
	return c, nil
}

// token reads the API token, and when there is none says why the command
// needs it.
func (af *apiFlags) token(cmd *cobra.Command, why string) (string, error) {
	tok, err := daemon.Secret(envPrefix+"API_TOKEN", af.tokenFile)
	if err != nil {
		return "", fmt.Errorf("API token: %w", err)
	}
	if tok == "" {
		return "", &usageError{err: fmt.Errorf("%s: give its API token with --api-token-file or $%sAPI_TOKEN", why, envPrefix), command: cmd.CommandPath()}
	}
	return tok, nil
}

// do sends a request and decodes a JSON answer into out; an error answer
// becomes an error with the daemon's message.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	wait := c.wait
	if wait <= 0 {
		wait = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("ask the daemon: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask the daemon: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("ask the daemon: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("the daemon answered %s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("the daemon answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("ask the daemon: unexpected answer: %w", err)
	}
	return nil
}

// migration connects to the daemon and resolves --plan, for the commands
// about one migration.
func (af *apiFlags) migration(cmd *cobra.Command, needToken bool) (*client, string, error) {
	c, err := af.client(cmd, needToken)
	if err != nil {
		return nil, "", err
	}
	m, err := c.migration(cmd.Context(), af.plan)
	return c, m, err
}

// migration resolves --plan: the named migration, or the only one.
func (c *client) migration(ctx context.Context, name string) (string, error) {
	if name != "" {
		return name, nil
	}
	var list struct{ Migrations []daemon.Migration }
	if err := c.do(ctx, http.MethodGet, "/api/v1/migrations?history=0", nil, &list); err != nil {
		return "", err
	}
	switch len(list.Migrations) {
	case 0:
		return "", errors.New("the daemon follows no migration")
	case 1:
		return list.Migrations[0].Name, nil
	}
	var names []string
	for _, m := range list.Migrations {
		names = append(names, m.Name)
	}
	return "", fmt.Errorf("the daemon follows %d migrations (%s): name one with --plan", len(names), strings.Join(names, ", "))
}

func newStateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Named snapshots of a migration's workloads, and going back to one",
		Long: `State manages checkpoints: snapshots of a migration's workloads (traffic
split, replicas, feature flags) that the daemon records. Plans take them
before the phases that name one; these commands take one on request, list
and export them, and restore one.

Restoring is a commit, like every change of the desired state: it moves
spec.target back to the checkpoint's position and sets the annotation
migrate.hal9.ai/restore-checkpoint, and the daemon restores the snapshot as
it moves back.`,
		Args: subcommandArgs,
		RunE: runGroup,
	}
	cmd.AddCommand(newStateCheckpointCmd(), newStateListCmd(), newStateExportCmd(), newStateRestoreCmd())
	return cmd
}

func newStateCheckpointCmd() *cobra.Command {
	var name, description string
	cmd := &cobra.Command{
		Use:     "checkpoint -n NAME [-d TEXT]",
		Short:   "Take a checkpoint of a migration's workloads now",
		Example: `  hal9-migrate state checkpoint -n before-ramp -d "all green at canary 35%" --daemon http://hal9-migrate:8080`,
		Args:    usageArgs(cobra.NoArgs),
	}
	af := addAPIFlags(cmd)
	format := addFormatFlag(cmd, "text", "json", "yaml")
	cmd.Flags().StringVarP(&name, "name", "n", "", "the checkpoint's `name` (lowercase letters, digits, dashes)")
	cmd.Flags().StringVarP(&description, "description", "d", "", "why it is taken")
	_ = cmd.MarkFlagRequired("name")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, m, err := af.migration(cmd, true)
		if err != nil {
			return err
		}
		var cp store.Checkpoint
		if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/migrations/"+url.PathEscape(m)+"/checkpoints",
			map[string]string{"name": name, "description": description}, &cp); err != nil {
			return err
		}
		switch format.value {
		case "json":
			return writeJSON(cmd.OutOrStdout(), cp)
		case "yaml":
			return writeYAML(cmd.OutOrStdout(), cp)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "checkpoint %s of %s taken at %s\n", cp.Name, m, cp.Position)
		return nil
	}
	return cmd
}

func newStateListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List a migration's checkpoints",
		Example: `  hal9-migrate state list --plan hal9-hierarchical`,
		Args:    usageArgs(cobra.NoArgs),
	}
	af := addAPIFlags(cmd)
	format := addFormatFlag(cmd, "text", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, m, err := af.migration(cmd, false)
		if err != nil {
			return err
		}
		var list struct {
			Checkpoints []store.Checkpoint `json:"checkpoints"`
		}
		if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/migrations/"+url.PathEscape(m)+"/checkpoints", nil, &list); err != nil {
			return err
		}
		switch format.value {
		case "json":
			return writeJSON(cmd.OutOrStdout(), list)
		case "yaml":
			return writeYAML(cmd.OutOrStdout(), list)
		}
		if len(list.Checkpoints) == 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "%s has no checkpoints\n", m)
			return nil
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPOSITION\tTAKEN\tDESCRIPTION")
		for _, cp := range list.Checkpoints {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cp.Name, cp.Position, cp.At.UTC().Format(time.RFC3339), cp.Description)
		}
		return tw.Flush()
	}
	return cmd
}

// export is the document state export writes.
type export struct {
	Migration   string             `json:"migration"`
	ExportedAt  time.Time          `json:"exportedAt"`
	Checkpoints []store.Checkpoint `json:"checkpoints"`
}

func newStateExportCmd() *cobra.Command {
	var out, only string
	cmd := &cobra.Command{
		Use:   "export -o FILE [-c NAME]",
		Short: "Write a migration's checkpoints, snapshots included, to a file",
		Example: `  hal9-migrate state export -o hal9-checkpoints.json
  hal9-migrate state export -c pre-canary -o - | jq .`,
		Args: usageArgs(cobra.NoArgs),
	}
	af := addAPIFlags(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "the `file` to write (- for standard output)")
	cmd.Flags().StringVarP(&only, "checkpoint", "c", "", "export only this checkpoint")
	_ = cmd.MarkFlagRequired("output")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, m, err := af.migration(cmd, false)
		if err != nil {
			return err
		}
		doc := export{Migration: m, ExportedAt: time.Now().UTC()}
		base := "/api/v1/migrations/" + url.PathEscape(m) + "/checkpoints"
		var names []string
		if only != "" {
			names = []string{only}
		} else {
			var list struct{ Checkpoints []store.Checkpoint }
			if err := c.do(cmd.Context(), http.MethodGet, base, nil, &list); err != nil {
				return err
			}
			for _, cp := range list.Checkpoints {
				names = append(names, cp.Name)
			}
		}
		for _, n := range names {
			var cp store.Checkpoint
			if err := c.do(cmd.Context(), http.MethodGet, base+"/"+url.PathEscape(n), nil, &cp); err != nil {
				return err
			}
			doc.Checkpoints = append(doc.Checkpoints, cp)
		}
		data, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		data = append(data, '\n')
		if out == "-" {
			_, err = cmd.OutOrStdout().Write(data)
			return err
		}
		if err := os.WriteFile(out, data, 0o600); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d checkpoints of %s to %s\n", len(doc.Checkpoints), m, out)
		return nil
	}
	return cmd
}

func newStateRestoreCmd() *cobra.Command {
	var name string
	var force bool
	cmd := &cobra.Command{
		Use:   "restore -c NAME",
		Short: "Go back to a checkpoint, as a commit",
		Long: `Restore commits a change to the plan: spec.target moves back to the
checkpoint's position, and the annotation migrate.hal9.ai/restore-checkpoint
names the checkpoint, so that the daemon restores its snapshot as it moves
back. The daemon is asked only where the checkpoint was taken. Going back
past a point of no return needs --force, as for rollback.

Where the commit goes (--repo, --branch, --push) works as for migrate.`,
		Example: `  hal9-migrate state restore -c pre-state-migration --force --daemon http://hal9-migrate:8080`,
		Args:    usageArgs(cobra.NoArgs),
	}
	rf := addRepoFlags(cmd)
	cf := addCommitFlags(cmd)
	f := cmd.Flags()
	var daemonURL string
	f.StringVar(&daemonURL, "daemon", os.Getenv(envDaemon), "the daemon's `URL` (default $HAL9_MIGRATE_DAEMON)")
	f.StringVarP(&name, "checkpoint", "c", "", "the checkpoint's `name`")
	f.BoolVar(&force, "force", false, "go back past a point of no return")
	_ = cmd.MarkFlagRequired("checkpoint")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		af := &apiFlags{daemon: daemonURL}
		c, err := af.client(cmd, false)
		if err != nil {
			return err
		}
		return runChange(cmd, rf, cf, func(p *plan.Plan) (decision, error) {
			var cp store.Checkpoint
			base := "/api/v1/migrations/" + url.PathEscape(p.Metadata.Name)
			if err := c.do(cmd.Context(), http.MethodGet, base+"/checkpoints/"+url.PathEscape(name), nil, &cp); err != nil {
				return decision{}, err
			}
			var m daemon.Migration
			if err := c.do(cmd.Context(), http.MethodGet, base, nil, &m); err != nil {
				return decision{}, err
			}
			return restore(p, m.Position, cp, force)
		})
	}
	return cmd
}

// restore decides the commit that goes back to checkpoint cp, the
// migration standing at live: the target moves to where cp was taken, the
// flags to those published then, and an annotation asks the daemon to
// restore cp's snapshot on its way there (back from above, or forward from
// below after a rollback).
func restore(p *plan.Plan, live plan.Position, cp store.Checkpoint, force bool) (decision, error) {
	name := p.Metadata.Name
	from, to := p.TargetPosition(), cp.Position
	switch {
	case p.Compare(to, from) > 0:
		return decision{}, fmt.Errorf("checkpoint %s was taken at %s, ahead of the target of %s, %s: restore goes back to a checkpoint; migrate there instead", cp.Name, to, name, from)
	case to.IsStart():
		return decision{}, fmt.Errorf("checkpoint %s was taken at start, before the first phase: roll back with `rollback --to-phase %s` instead", cp.Name, p.Spec.Phases[0].Name)
	case live == to:
		return decision{}, fmt.Errorf("%s stands at %s, where checkpoint %s was taken: a snapshot is restored on the way to its position, so move the migration away first (`rollback`)", name, live, cp.Name)
	}
	d := decision{
		edits:    []plan.FileEdit{plan.SetTarget(p.TargetFor(to)), plan.SetAnnotation(plan.RestoreCheckpointAnnotation, cp.Name)},
		subject:  fmt.Sprintf("restore(%s): %s → %s, checkpoint %s", name, live, to, cp.Name),
		body:     fmt.Sprintf("Moves the target to %s, where checkpoint %s was taken%s, and asks the daemon to restore its snapshot (annotation %s).", to, cp.Name, describe(cp), plan.RestoreCheckpointAnnotation),
		trailers: moveTrailers(p, "restore", from, to),
	}
	if cp.Flags != nil {
		// The flags go back with the rest: Git says what is published.
		for _, f := range slices.Sorted(maps.Keys(p.Spec.Features)) {
			if _, ok := cp.Flags[f]; !ok {
				d.edits = append(d.edits, plan.RemoveFeature(f))
			}
		}
		for _, f := range slices.Sorted(maps.Keys(cp.Flags)) {
			if v, ok := p.Spec.Features[f]; !ok || v != cp.Flags[f] {
				d.edits = append(d.edits, plan.SetFeature(f, cp.Flags[f]))
			}
		}
		if len(d.edits) > 2 {
			d.body += " The feature flags go back to those published then."
		}
	}
	if s, ok := p.PointOfNoReturn(from, to); ok {
		if !force {
			return decision{}, fmt.Errorf("refusing to restore %s of %s: going back to %s passes %s, a point of no return (phase %s is irreversible); run again with --force if you mean it",
				cp.Name, name, to, s.Position, s.Phase)
		}
		d.edits = append(d.edits, plan.SetAnnotation(plan.ForceRollbackAnnotation, to.String()))
		d.subject += " (forced)"
	}
	return d, nil
}

func describe(cp store.Checkpoint) string {
	s := " on " + cp.At.UTC().Format(time.RFC3339)
	if cp.Description != "" {
		s += " (" + cp.Description + ")"
	}
	return s
}
