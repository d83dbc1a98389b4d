package notify

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// TeamsConfig posts an Adaptive Card to a Microsoft Teams incoming
// webhook (a Workflows "post to a channel when a webhook request is
// received" URL). Its URL is a secret: it is read from a file.
type TeamsConfig struct {
	WebhookURLFile string `yaml:"webhookURLFile"`
}

var _ = register(Kind{
	Name:       "teams",
	Configured: func(t *TargetConfig) bool { return t.Teams != nil },
	Check: func(t *TargetConfig) error {
		if t.Teams.WebhookURLFile == "" {
			return errors.New("webhookURLFile: name the file holding the incoming webhook's URL")
		}
		return nil
	},
	Open: func(t *TargetConfig, client *http.Client) (Sender, error) {
		u, err := readSecret(t.Teams.WebhookURLFile, "the Teams webhook URL")
		if err != nil {
			return nil, err
		}
		if err := checkURL(u, "the Teams webhook URL"); err != nil {
			return nil, err
		}
		return teams{url: u, client: client}, nil
	},
})

type teams struct {
	url    string
	client *http.Client
}

func (s teams) Send(ctx context.Context, m Message) error {
	body, err := json.Marshal(teamsPayload(m))
	if err != nil {
		return Permanent{err}
	}
	return post(ctx, s.client, s.url, http.Header{}, body)
}

// teamsPayload is a message with one Adaptive Card (schema 1.4): the
// title, the text, and the facts of the event.
func teamsPayload(m Message) map[string]any {
	e := m.Event
	var facts []map[string]string
	fact := func(title, value string) {
		if value != "" {
			facts = append(facts, map[string]string{"title": title, "value": value})
		}
	}
	fact("Plan", e.Plan)
	fact("Event", string(e.Kind))
	fact("From", e.From)
	fact("To", e.To)
	fact("Target", e.Target)
	fact("Guardrail", e.Guardrail)
	if e.Value != nil {
		fact("Value", funcs["num"].(func(*float64) string)(e.Value))
	}
	fact("Member", e.Member)
	fact("Commit", short(e.Commit))
	color := "Default"
	switch e.Kind {
	case Rollback, Breach, Frozen, RollbackNotCommitted, PlanInvalid, ChangeNotSigned, PromotionRefused:
		color = "Attention"
	case Completed:
		color = "Good"
	}
	card := map[string]any{
		"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
		"type":    "AdaptiveCard",
		"version": "1.4",
		"body": []any{
			map[string]any{"type": "TextBlock", "text": m.Title, "weight": "Bolder", "size": "Medium", "wrap": true, "color": color},
			map[string]any{"type": "TextBlock", "text": m.Text, "wrap": true},
			map[string]any{"type": "FactSet", "facts": facts},
		},
	}
	return map[string]any{
		"type": "message",
		"attachments": []any{map[string]any{
			"contentType": "application/vnd.microsoft.card.adaptive",
			"contentUrl":  nil,
			"content":     card,
		}},
	}
}
