package notify

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// SlackConfig posts to a Slack incoming webhook. Its URL is a secret: it
// is read from a file.
type SlackConfig struct {
	WebhookURLFile string `yaml:"webhookURLFile"`
}

var _ = register(Kind{
	Name:       "slack",
	Configured: func(t *TargetConfig) bool { return t.Slack != nil },
	Check: func(t *TargetConfig) error {
		if t.Slack.WebhookURLFile == "" {
			return errors.New("webhookURLFile: name the file holding the incoming webhook's URL")
		}
		return nil
	},
	Open: func(t *TargetConfig, client *http.Client) (Sender, error) {
		u, err := readSecret(t.Slack.WebhookURLFile, "the Slack webhook URL")
		if err != nil {
			return nil, err
		}
		if err := checkURL(u, "the Slack webhook URL"); err != nil {
			return nil, err
		}
		return slack{url: u, client: client}, nil
	},
})

type slack struct {
	url    string
	client *http.Client
}

// slackText is a text object of Block Kit.
type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackBlock struct {
	Type string     `json:"type"`
	Text *slackText `json:"text,omitempty"`
	// Elements are a context block's.
	Elements []slackText `json:"elements,omitempty"`
}

// slackMessage is what an incoming webhook takes: text is the
// notification's fallback, blocks what is shown.
type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

func (s slack) Send(ctx context.Context, m Message) error {
	body, err := json.Marshal(slackPayload(m))
	if err != nil {
		return Permanent{err}
	}
	return post(ctx, s.client, s.url, http.Header{}, body)
}

func slackPayload(m Message) slackMessage {
	e := m.Event
	ctxText := "hal9-migrate · " + string(e.Kind) + " · plan " + e.Plan
	if e.Commit != "" {
		ctxText += " · commit " + short(e.Commit)
	}
	return slackMessage{
		Text: m.Title,
		Blocks: []slackBlock{
			{Type: "header", Text: &slackText{Type: "plain_text", Text: m.Title}},
			{Type: "section", Text: &slackText{Type: "mrkdwn", Text: m.Text}},
			{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: ctxText}}},
		},
	}
}

func short(c string) string { return funcs["short"].(func(string) string)(c) }
