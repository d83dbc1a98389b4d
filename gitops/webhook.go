package gitops

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Push is what a push webhook says: a branch moved to a commit.
type Push struct {
	// Source is the forge that sent it: github, gitea, forgejo or gitlab.
	Source string
	// Ref is the full ref name, "refs/heads/main".
	Ref string
	// After is the commit the ref points to now.
	After string
}

// Branch returns the branch name of the push, or "" for a tag.
func (p Push) Branch() string {
	b, ok := strings.CutPrefix(p.Ref, "refs/heads/")
	if !ok {
		return ""
	}
	return b
}

// maxWebhookBody bounds what a webhook request may send; push payloads of
// the forges are well under it.
const maxWebhookBody = 5 << 20

// WebhookHandler returns the handler of push webhooks from GitHub, Gitea,
// Forgejo and GitLab. A request is accepted only when it proves it knows
// secret: GitHub's X-Hub-Signature-256 (HMAC-SHA256 of the body), Gitea's and
// Forgejo's X-Gitea-Signature / X-Forgejo-Signature (the same, in hex), or
// GitLab's X-Gitlab-Token (the secret itself). Anything else gets 401 and
// does nothing. Accepted pushes are handed to onPush, which must return
// quickly (it should only wake the sync loop); other events (ping) are
// acknowledged and ignored.
func WebhookHandler(secret []byte, onPush func(Push)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "webhooks are POSTed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "cannot read the payload", http.StatusBadRequest)
			return
		}
		source, event, err := authenticate(r.Header, body, secret)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if !isPush(source, event) {
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, "ignored %s event %q\n", source, event)
			return
		}
		push, err := parsePush(source, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		onPush(push)
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "sync triggered by %s\n", push.After)
	})
}

// authenticate checks the request's proof of the secret and says which
// forge sent it and which event it is.
func authenticate(h http.Header, body, secret []byte) (source, event string, err error) {
	if len(secret) == 0 {
		return "", "", errors.New("no webhook secret is configured: every request is refused")
	}
	switch {
	case h.Get("X-Gitlab-Event") != "":
		token := h.Get("X-Gitlab-Token")
		if token == "" || subtle.ConstantTimeCompare([]byte(token), secret) != 1 {
			return "", "", errors.New("missing or wrong X-Gitlab-Token")
		}
		return "gitlab", h.Get("X-Gitlab-Event"), nil
	case h.Get("X-Forgejo-Event") != "" || h.Get("X-Gitea-Event") != "":
		source, event = "gitea", h.Get("X-Gitea-Event")
		if h.Get("X-Forgejo-Event") != "" {
			source, event = "forgejo", h.Get("X-Forgejo-Event")
		}
		sig := h.Get("X-Forgejo-Signature")
		if sig == "" {
			sig = h.Get("X-Gitea-Signature")
		}
		if sig == "" {
			sig = strings.TrimPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		}
		if !validHMAC(sig, body, secret) {
			return "", "", errors.New("missing or wrong signature")
		}
		return source, event, nil
	case h.Get("X-GitHub-Event") != "":
		sig, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		if !ok || !validHMAC(sig, body, secret) {
			return "", "", errors.New("missing or wrong X-Hub-Signature-256")
		}
		return "github", h.Get("X-GitHub-Event"), nil
	}
	return "", "", errors.New("not a webhook of GitHub, Gitea, Forgejo or GitLab")
}

func validHMAC(hexSig string, body, secret []byte) bool {
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

func isPush(source, event string) bool {
	if source == "gitlab" {
		return event == "Push Hook"
	}
	return event == "push"
}

// parsePush reads the ref and the new commit; the forges agree on "ref" and
// "after" (GitLab also sends "checkout_sha").
func parsePush(source string, body []byte) (Push, error) {
	var p struct {
		Ref   string `json:"ref"`
		After string `json:"after"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return Push{}, fmt.Errorf("push payload: %w", err)
	}
	if p.Ref == "" {
		return Push{}, errors.New("push payload has no ref")
	}
	return Push{Source: source, Ref: p.Ref, After: p.After}, nil
}
