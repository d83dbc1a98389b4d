package daemon

import (
	"encoding/json"

	"github.com/hal9ai/hal9-migrate/notify"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// Notifier takes the transitions people are told about (notify.Dispatcher
// has it). Notify must not block: the safety loop calls it.
type Notifier interface {
	Notify(e notify.Event)
}

// onSaved turns the events the runner saved into notifications: each
// transition once, as the plan's history records it. A lockstep group's
// rollback is one notification per member rolled back, each naming the
// member whose failure pulled the group back.
func (d *Daemon) onSaved(rec store.Record, events []store.Event) {
	for _, e := range events {
		kind, ok := eventKind(e, rec)
		if !ok {
			continue
		}
		n := notify.Event{Kind: kind, At: e.At, Plan: rec.Plan, From: e.From.String(), To: e.To.String(),
			Reason: e.Reason, Commit: e.Commit}
		if kind == notify.Holding || kind == notify.Completed {
			n.To = rec.Position.String() // a Wait's from and to are where it stands
		}
		var f reconcile.Failure
		if len(e.Data) > 0 && json.Unmarshal(e.Data, &f) == nil {
			n.What, n.Guardrail, n.Bound, n.Member = f.What, f.Guardrail, f.Bound, f.Member
			if f.Guardrail != "" {
				n.Value = &f.Value
			}
		}
		if ds := d.desiredOf(rec.Plan); ds != nil {
			n.Target, n.Group = ds.Target.String(), ds.Plan.Spec.Group
		}
		d.Notify.Notify(n)
	}
}

// eventKind is the notification of a saved event, if it makes one: the
// moves up and the rollbacks and freezes as they are decided, and the
// states a Wait records a change to.
func eventKind(e store.Event, rec store.Record) (notify.EventKind, bool) {
	switch reconcile.Kind(e.Kind) {
	case reconcile.Advance:
		return notify.Advanced, true
	case reconcile.Rollback:
		return notify.Rollback, true
	case reconcile.Freeze:
		return notify.Frozen, true
	case reconcile.Wait:
		switch rec.Status {
		case reconcile.StatusHolding:
			return notify.Holding, true
		case reconcile.StatusCompleted:
			return notify.Completed, true
		case reconcile.StatusBreached:
			return notify.Breach, true
		}
	}
	return "", false
}

// desiredOf returns the followed plan named name, or nil.
func (d *Daemon) desiredOf(name string) *reconcile.Desired {
	for _, ds := range d.snapshot() {
		if ds.Plan.Metadata.Name == name {
			return ds
		}
	}
	return nil
}

// notifyConditions tells of the conditions of a plan's status that were
// not there when it was last looked at (PlanInvalid, ChangeNotSigned,
// RollbackNotCommitted, PromotionProposed, PromotionRefused): each once
// while it stands. It holds d.mu.
func (d *Daemon) notifyConditionsLocked(ds *reconcile.Desired, rec store.Record, conds []Condition) {
	if d.Notify == nil {
		return
	}
	name := ds.Plan.Metadata.Name
	if d.notified == nil {
		d.notified = map[string]map[string]bool{}
	}
	was, ok := d.notified[name]
	if !ok {
		was = d.committedConditions(name)
	}
	now := map[string]bool{}
	for _, c := range conds {
		now[c.Type] = true
		kind, ok := notify.ConditionEvent(c.Type)
		if !ok || was[c.Type] {
			continue
		}
		d.Notify.Notify(notify.Event{Kind: kind, At: d.Clock.Now(), Plan: name, Group: ds.Plan.Spec.Group,
			From: rec.Position.String(), To: rec.Position.String(), Target: ds.Target.String(),
			Reason: c.Message, Commit: firstOf(c.Commit, ds.Commit)})
	}
	d.notified[name] = now
}

// committedConditions returns the condition types of the plan's status
// file as Git has it, which the daemon committed, and told, before a
// restart: so a condition that stands (a plan Frozen for a day) is not
// told again on every restart, while one the file does not have, or a new
// one, still is. It reads the local clone, never the network.
func (d *Daemon) committedConditions(name string) map[string]bool {
	seen := map[string]bool{}
	files, ok := d.statusGit().(FileReader)
	if !ok {
		return seen
	}
	b, err := files.ReadFile(d.StatusDir + "/" + name + ".yaml")
	if err != nil {
		return seen
	}
	st, err := parseStatus(b, name)
	if err != nil {
		return seen
	}
	for _, c := range st.Status.Conditions {
		seen[c.Type] = true
	}
	return seen
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
