// Package notify tells people about the transitions of their migrations:
// a migration advanced, holds at its target, breached a guardrail, rolled
// back, froze, completed; a plan is invalid, a change is not signed, a
// rollback could not be committed; a promotion was proposed or refused.
//
// A Dispatcher sends each Event to the targets configured for it (Slack,
// Microsoft Teams, a webhook signed with HMAC-SHA256, CloudEvents over
// HTTP), each target from a bounded queue of its own, with bounded retries
// and a deadline per send. Handing an event over never blocks: when a
// target's queue is full the event is dropped for that target and counted.
// A slow or failing receiver delays only its own target's queue.
//
// A kind of target is one file: its configuration block (a field of
// TargetConfig), a Sender, and a register call.
package notify

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// EventKind is what happened, as targets' `events` lists and `templates`
// keys name it.
type EventKind string

// The events sent.
const (
	Advanced             EventKind = "advanced"             // the migration moved up a step
	Holding              EventKind = "holding"              // it reached its target, short of the plan's end, and holds there
	Breach               EventKind = "breach"               // a guardrail breached and automatic rollback is off: it holds
	Rollback             EventKind = "rollback"             // a failure rolled it back (a breach names its guardrail)
	Frozen               EventKind = "frozen"               // a failure past a point of no return froze it
	Completed            EventKind = "completed"            // it reached the plan's end
	PlanInvalid          EventKind = "planInvalid"          // the plan's file is broken at head: its last good version is followed
	ChangeNotSigned      EventKind = "changeNotSigned"      // a change lacks a trusted signature and is kept back
	RollbackNotCommitted EventKind = "rollbackNotCommitted" // a rollback could not be pushed to Git
	PromotionProposed    EventKind = "promotionProposed"    // the next target was pushed on a branch for a pull request
	PromotionRefused     EventKind = "promotionRefused"     // a promotion could not be made
)

// EventKinds are all the events, in the order a person meets them.
var EventKinds = []EventKind{Advanced, Holding, Breach, Rollback, Frozen, Completed,
	PlanInvalid, ChangeNotSigned, RollbackNotCommitted, PromotionProposed, PromotionRefused}

// ConditionEvent returns the event of a status condition's type
// ("PlanInvalid" → planInvalid), and whether there is one.
func ConditionEvent(condition string) (EventKind, bool) {
	if condition == "" {
		return "", false
	}
	k := EventKind(strings.ToLower(condition[:1]) + condition[1:])
	return k, slices.Contains(EventKinds[6:], k)
}

// Event is one transition of one plan. Templates see its fields.
type Event struct {
	Kind EventKind `json:"event"`
	// ID is unique per event (the CloudEvents id, the webhook's id).
	ID   string    `json:"id"`
	At   time.Time `json:"time"`
	Plan string    `json:"plan"`
	// Group is the plan's lockstep group, if any.
	Group string `json:"group,omitempty"`
	// From and To are the positions of a move ("canary 10%"); At a
	// condition or a hold, both are where the migration stands.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Target is the plan's spec.target.
	Target string `json:"target,omitempty"`
	// Reason is the reconciler's reason, or a condition's message.
	Reason string `json:"reason,omitempty"`
	// Commit is the commit the plan was followed at.
	Commit string `json:"commit,omitempty"`
	// What failed, for a breach, a rollback or a freeze: Guardrail, Value
	// and Bound for a guardrail's breach; Member, in a lockstep group, the
	// member where it failed.
	What      string   `json:"what,omitempty"`
	Guardrail string   `json:"guardrail,omitempty"`
	Value     *float64 `json:"value,omitempty"`
	Bound     string   `json:"bound,omitempty"`
	Member    string   `json:"member,omitempty"`
}

// Message is an event as a target sends it: the event, and its title and
// text from the templates.
type Message struct {
	Event Event
	Title string
	Text  string
}

// Sender sends one message to one receiver. It returns a Permanent error
// when trying again cannot help (the receiver refused the request). ctx
// carries the send's deadline.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// Permanent marks an error that retrying cannot fix.
type Permanent struct{ Err error }

func (p Permanent) Error() string { return p.Err.Error() }
func (p Permanent) Unwrap() error { return p.Err }

// Kind is a kind of target: the name of its configuration block, and how
// a sender is made from a target's configuration. Each target's file
// registers its kind.
type Kind struct {
	// Name is the block's name in a target's configuration: "slack".
	Name string
	// Configured tells whether t has this kind's block.
	Configured func(t *TargetConfig) bool
	// Check reports what is wrong with the block, without reading files.
	Check func(t *TargetConfig) error
	// Open reads the block's secrets and makes the sender; client has no
	// timeout of its own: each send has its deadline.
	Open func(t *TargetConfig, client *http.Client) (Sender, error)
}

// kinds are the registered kinds of target, by name.
var kinds = map[string]Kind{}

// register records a kind of target and returns it. Each target's file
// registers its own, once.
func register(k Kind) Kind {
	if _, dup := kinds[k.Name]; dup {
		panic("notify: the target kind " + k.Name + " is registered twice")
	}
	kinds[k.Name] = k
	return k
}

// Kinds lists the registered kinds of target, sorted.
func Kinds() []string { return slices.Sorted(maps.Keys(kinds)) }

// kindOf returns the one kind whose block t has.
func kindOf(t *TargetConfig) (Kind, error) {
	var found []Kind
	for _, name := range Kinds() {
		if k := kinds[name]; k.Configured(t) {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return Kind{}, fmt.Errorf("no target kind: set one of %s", strings.Join(Kinds(), ", "))
	case 1:
		return found[0], nil
	}
	return Kind{}, fmt.Errorf("%s and %s both set: a target is one kind; make two targets", found[0].Name, found[1].Name)
}
