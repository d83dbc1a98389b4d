package notify

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Config is the daemon configuration's `notifications` block.
type Config struct {
	Targets []TargetConfig `yaml:"targets"`
}

// TargetConfig is one receiver: its kind's block (exactly one of them),
// which events and plans go to it, and how its messages read.
type TargetConfig struct {
	// Name names the target in logs and metrics.
	Name        string             `yaml:"name"`
	Slack       *SlackConfig       `yaml:"slack"`
	Teams       *TeamsConfig       `yaml:"teams"`
	Webhook     *WebhookConfig     `yaml:"webhook"`
	CloudEvents *CloudEventsConfig `yaml:"cloudevents"`
	// Events are the events sent (EventKinds' names); empty: all.
	Events []string `yaml:"events"`
	// Plans are globs (path.Match) of the plans whose events are sent;
	// empty: all.
	Plans []string `yaml:"plans"`
	// Templates replace the text of an event's message, by event name: Go
	// text/template over Event.
	Templates map[string]string `yaml:"templates"`
	// Timeout bounds one send (default 10s); Retries is how many times a
	// failed send is tried again (default 3; 0: never), waiting longer
	// each time.
	Timeout time.Duration `yaml:"timeout"`
	Retries *int          `yaml:"retries"`
	// Queue is how many events wait for the target at most (default
	// 100); more are dropped, and counted.
	Queue int `yaml:"queue"`
}

// Defaults of a target.
const (
	DefaultTimeout = 10 * time.Second
	DefaultRetries = 3
	DefaultQueue   = 100
	// MaxRetries bounds Retries.
	MaxRetries = 10
)

// Check reports the first setting that cannot work, naming where it is
// (notifications.targets[i]). It reads no file.
func (c Config) Check() error {
	seen := map[string]bool{}
	for i := range c.Targets {
		t := &c.Targets[i]
		where := fmt.Sprintf("notifications.targets[%d]", i)
		if t.Name != "" {
			where += " (" + t.Name + ")"
		}
		if err := t.check(seen); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

func (t *TargetConfig) check(seen map[string]bool) error {
	switch {
	case t.Name == "":
		return errors.New("name: set a name, for logs and metrics")
	case seen[t.Name]:
		return fmt.Errorf("name: %q is used by another target", t.Name)
	case t.Timeout < 0:
		return fmt.Errorf("timeout: %s is negative", t.Timeout)
	case t.Retries != nil && (*t.Retries < 0 || *t.Retries > MaxRetries):
		return fmt.Errorf("retries: %d is not within 0..%d", *t.Retries, MaxRetries)
	case t.Queue < 0:
		return fmt.Errorf("queue: %d is negative", t.Queue)
	}
	seen[t.Name] = true
	k, err := kindOf(t)
	if err != nil {
		return err
	}
	if err := k.Check(t); err != nil {
		return fmt.Errorf("%s: %w", k.Name, err)
	}
	for _, e := range t.Events {
		if !slices.Contains(EventKinds, EventKind(e)) {
			return fmt.Errorf("events: %q is not an event; the events are %s", e, eventNames())
		}
	}
	for _, g := range t.Plans {
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("plans: %q is not a glob: %w", g, err)
		}
	}
	_, err = parseTemplates(t.Templates)
	return err
}

func eventNames() string {
	var s []string
	for _, k := range EventKinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// wants tells whether the event goes to the target.
func (t *TargetConfig) wants(e Event) bool {
	if len(t.Events) > 0 && !slices.Contains(t.Events, string(e.Kind)) {
		return false
	}
	if len(t.Plans) == 0 {
		return true
	}
	for _, g := range t.Plans {
		if ok, _ := path.Match(g, e.Plan); ok {
			return true
		}
	}
	return false
}

// readSecret reads a secret file; what says what it is, for errors, which
// never carry its content.
func readSecret(file, what string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s file %s is empty", what, file)
	}
	return s, nil
}
