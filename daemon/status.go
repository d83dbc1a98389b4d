package daemon

import (
	"bytes"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/store"
)

// Status is the document committed as status/<plan>.yaml: where the
// migration is, why, and what happened lately. People read it in pull
// requests and `hal9-migrate status` reads it when no daemon answers.
type Status struct {
	APIVersion string `json:"apiVersion" yaml:"apiVersion"`
	Kind       string `json:"kind" yaml:"kind"`
	Metadata   struct {
		Name string `json:"name" yaml:"name"`
	} `json:"metadata" yaml:"metadata"`
	Status StatusBody `json:"status" yaml:"status"`
}

// StatusBody is the status proper.
type StatusBody struct {
	Phase          string    `json:"phase" yaml:"phase"`
	Percentage     int       `json:"percentage" yaml:"percentage"`
	Target         string    `json:"target" yaml:"target"`
	Since          time.Time `json:"since" yaml:"since"`
	State          string    `json:"state,omitempty" yaml:"state,omitempty"`
	Reason         string    `json:"reason,omitempty" yaml:"reason,omitempty"`
	Commit         string    `json:"commit,omitempty" yaml:"commit,omitempty"`
	Decommissioned bool      `json:"decommissioned,omitempty" yaml:"decommissioned,omitempty"`
	// Group is the lockstep group the plan moves in.
	Group string `json:"group,omitempty" yaml:"group,omitempty"`
	// Reached is the climb to the position: each position entered on the
	// way up and when. Gates on this plan, from other daemons too, read
	// since when a position has been held.
	Reached []store.Reached `json:"reached,omitempty" yaml:"reached,omitempty"`
	// Waiting are the gates the next move waits on, with why.
	Waiting    []string         `json:"waiting,omitempty" yaml:"waiting,omitempty"`
	Conditions []Condition      `json:"conditions,omitempty" yaml:"conditions,omitempty"`
	Failed     []FailedPosition `json:"failed,omitempty" yaml:"failed,omitempty"`
	History    []HistoryEntry   `json:"history,omitempty" yaml:"history,omitempty"`
}

// Condition is a problem the status reports: PlanInvalid (a commit broke the
// plan; the last good one is followed), RollbackNotCommitted (the live
// rollback stands; its commit is being retried), ChangeNotSigned (in signed
// mode, a commit not signed by a trusted key changed the plan; the last
// signed version is followed, with any lowered target).
type Condition struct {
	Type    string `json:"type" yaml:"type"`
	Commit  string `json:"commit,omitempty" yaml:"commit,omitempty"`
	Message string `json:"message" yaml:"message"`
}

// FailedPosition is a position not entered again until a newer commit.
type FailedPosition struct {
	Position string    `json:"position" yaml:"position"`
	Commit   string    `json:"commit" yaml:"commit"`
	Reason   string    `json:"reason" yaml:"reason"`
	At       time.Time `json:"at" yaml:"at"`
}

// HistoryEntry is one recent action.
type HistoryEntry struct {
	At     time.Time `json:"at" yaml:"at"`
	Action string    `json:"action" yaml:"action"`
	From   string    `json:"from" yaml:"from"`
	To     string    `json:"to" yaml:"to"`
	Reason string    `json:"reason" yaml:"reason"`
}

// Marshal writes the status as YAML with two-space indentation.
func (s Status) Marshal() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by hal9-migrate on every transition; edits are overwritten.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Key identifies the content of a status, to commit only changes.
func (s Status) Key() string {
	b, _ := s.Marshal()
	return string(b)
}
