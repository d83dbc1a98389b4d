package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// WebhookConfig posts the event as JSON to a URL, signed with HMAC-SHA256
// under the secret in SecretFile.
//
// The receiver verifies a request by computing
//
//	hex(HMAC-SHA256(secret, X-Hal9-Timestamp + "." + body))
//
// and comparing it, in constant time, with X-Hal9-Signature after its
// "sha256=" prefix; and by refusing a timestamp (Unix seconds) too far
// from its clock, so that a request recorded cannot be replayed later.
// X-Hal9-Event names the event and X-Hal9-Delivery is its id, the same
// on every retry.
type WebhookConfig struct {
	URL        string `yaml:"url"`
	SecretFile string `yaml:"secretFile"`
}

// The webhook's headers.
const (
	SignatureHeader = "X-Hal9-Signature"
	TimestampHeader = "X-Hal9-Timestamp"
	EventHeader     = "X-Hal9-Event"
	DeliveryHeader  = "X-Hal9-Delivery"
)

var _ = register(Kind{
	Name:       "webhook",
	Configured: func(t *TargetConfig) bool { return t.Webhook != nil },
	Check: func(t *TargetConfig) error {
		if err := checkURL(t.Webhook.URL, "url"); err != nil {
			return err
		}
		if t.Webhook.SecretFile == "" {
			return errors.New("secretFile: name the file holding the HMAC secret the receiver verifies with")
		}
		return nil
	},
	Open: func(t *TargetConfig, client *http.Client) (Sender, error) {
		secret, err := readSecret(t.Webhook.SecretFile, "the webhook secret")
		if err != nil {
			return nil, err
		}
		return webhook{url: t.Webhook.URL, secret: []byte(secret), client: client, now: time.Now}, nil
	},
})

type webhook struct {
	url    string
	secret []byte
	client *http.Client
	now    func() time.Time
}

// webhookBody is what the webhook posts: the event's fields, and its
// message's title and text.
type webhookBody struct {
	Event
	Title string `json:"title"`
	Text  string `json:"text"`
}

func (w webhook) Send(ctx context.Context, m Message) error {
	body, err := json.Marshal(webhookBody{Event: m.Event, Title: m.Title, Text: m.Text})
	if err != nil {
		return Permanent{err}
	}
	ts := strconv.FormatInt(w.now().Unix(), 10)
	h := http.Header{}
	h.Set(TimestampHeader, ts)
	h.Set(SignatureHeader, "sha256="+Sign(w.secret, ts, body))
	h.Set(EventHeader, string(m.Event.Kind))
	h.Set(DeliveryHeader, m.Event.ID)
	return post(ctx, w.client, w.url, h, body)
}

// Sign is the webhook's signature of body sent at timestamp ts:
// hex(HMAC-SHA256(secret, ts + "." + body)).
func Sign(secret []byte, ts string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a webhook request's signature header and timestamp: the
// signature must match and the timestamp be within tolerance of now.
func Verify(secret []byte, signature, ts string, body []byte, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("the timestamp is not Unix seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("the timestamp is too far from now")
	}
	want := "sha256=" + Sign(secret, ts, body)
	if !hmac.Equal([]byte(signature), []byte(want)) {
		return errors.New("the signature does not match")
	}
	return nil
}
