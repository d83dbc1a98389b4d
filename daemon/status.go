package daemon

import (
	"bytes"
	"time"

	"gopkg.in/yaml.v3"
)

// Status is the document committed as status/<plan>.yaml: where the
// migration is, why, and what happened lately. People read it in pull
// requests and `hal9-migrate status` reads it when no daemon answers.
type Status struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Status StatusBody `yaml:"status"`
}

// StatusBody is the status proper.
type StatusBody struct {
	Phase          string           `yaml:"phase"`
	Percentage     int              `yaml:"percentage"`
	Target         string           `yaml:"target"`
	Since          time.Time        `yaml:"since"`
	State          string           `yaml:"state,omitempty"`
	Reason         string           `yaml:"reason,omitempty"`
	Commit         string           `yaml:"commit,omitempty"`
	Decommissioned bool             `yaml:"decommissioned,omitempty"`
	Conditions     []Condition      `yaml:"conditions,omitempty"`
	Failed         []FailedPosition `yaml:"failed,omitempty"`
	History        []HistoryEntry   `yaml:"history,omitempty"`
}

// Condition is a problem the status reports: PlanInvalid (a commit broke the
// plan; the last good one is followed), RollbackNotCommitted (the live
// rollback stands; its commit is being retried), AdvanceNotSigned (a commit
// not signed by a trusted key moved the target forward; it is held).
type Condition struct {
	Type    string `yaml:"type"`
	Commit  string `yaml:"commit,omitempty"`
	Message string `yaml:"message"`
}

// FailedPosition is a position not entered again until a newer commit.
type FailedPosition struct {
	Position string    `yaml:"position"`
	Commit   string    `yaml:"commit"`
	Reason   string    `yaml:"reason"`
	At       time.Time `yaml:"at"`
}

// HistoryEntry is one recent action.
type HistoryEntry struct {
	At     time.Time `yaml:"at"`
	Action string    `yaml:"action"`
	From   string    `yaml:"from"`
	To     string    `yaml:"to"`
	Reason string    `yaml:"reason"`
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
