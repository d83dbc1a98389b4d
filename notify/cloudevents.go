package notify

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// CloudEventsConfig sends each event as a CloudEvent (spec 1.0) over HTTP,
// with the type TypePrefix + event ("ai.hal9.migrate.rollback"), the plan
// as its subject and the event's fields as its JSON data.
type CloudEventsConfig struct {
	URL string `yaml:"url"`
	// Source is the events' source (default "hal9-migrate"): a URI
	// reference naming this daemon.
	Source string `yaml:"source"`
	// Mode is "binary" (the default: attributes in ce- headers, the data
	// as the body) or "structured" (one application/cloudevents+json
	// document).
	Mode string `yaml:"mode"`
}

// TypePrefix prefixes the event's name in a CloudEvent's type.
const TypePrefix = "ai.hal9.migrate."

var _ = register(Kind{
	Name:       "cloudevents",
	Configured: func(t *TargetConfig) bool { return t.CloudEvents != nil },
	Check: func(t *TargetConfig) error {
		if err := checkURL(t.CloudEvents.URL, "url"); err != nil {
			return err
		}
		switch t.CloudEvents.Mode {
		case "", "binary", "structured":
		default:
			return fmt.Errorf("mode: %q is not binary or structured", t.CloudEvents.Mode)
		}
		return nil
	},
	Open: func(t *TargetConfig, client *http.Client) (Sender, error) {
		c, err := cloudevents.NewClientHTTP(cehttp.WithTarget(t.CloudEvents.URL), cehttp.WithClient(*client))
		if err != nil {
			return nil, fmt.Errorf("cloudevents: %w", err)
		}
		src := t.CloudEvents.Source
		if src == "" {
			src = "hal9-migrate"
		}
		return ceSender{client: c, source: src, structured: t.CloudEvents.Mode == "structured"}, nil
	},
})

type ceSender struct {
	client     cloudevents.Client
	source     string
	structured bool
}

// ceData is a CloudEvent's data: the event's fields, and its message's
// title and text.
type ceData = webhookBody

func (s ceSender) Send(ctx context.Context, m Message) error {
	ev := cloudevents.NewEvent()
	ev.SetID(m.Event.ID)
	ev.SetSource(s.source)
	ev.SetType(TypePrefix + string(m.Event.Kind))
	ev.SetSubject(m.Event.Plan)
	ev.SetTime(m.Event.At)
	if err := ev.SetData(cloudevents.ApplicationJSON, ceData{Event: m.Event, Title: m.Title, Text: m.Text}); err != nil {
		return Permanent{err}
	}
	if s.structured {
		ctx = cloudevents.WithEncodingStructured(ctx)
	} else {
		ctx = cloudevents.WithEncodingBinary(ctx)
	}
	res := s.client.Send(ctx, ev)
	if cloudevents.IsACK(res) {
		return nil
	}
	var hr *cehttp.Result
	if errors.As(res, &hr) && hr.StatusCode/100 == 4 && hr.StatusCode != 408 && hr.StatusCode != 429 {
		return Permanent{fmt.Errorf("the receiver answered %d", hr.StatusCode)}
	}
	return res
}
