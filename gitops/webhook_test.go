package gitops

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func sign(secret, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return hex.EncodeToString(mac.Sum(nil))
}

func TestWebhook(t *testing.T) {
	const secret = "s3cret"
	const body = `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"name":"plans"}}`
	tests := []struct {
		name    string
		method  string
		headers map[string]string
		body    string
		code    int
		push    *Push
	}{
		{"github push", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(secret, body)}, body,
			202, &Push{Source: "github", Ref: "refs/heads/main", After: "0123456789abcdef0123456789abcdef01234567"}},
		{"github ping", "POST", map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + sign(secret, `{}`)}, `{}`, 202, nil},
		{"github unsigned", "POST", map[string]string{"X-GitHub-Event": "push"}, body, 401, nil},
		{"github signed with another secret", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign("other", body)}, body, 401, nil},
		{"github signature of another body", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(secret, body+" ")}, body, 401, nil},
		{"github sha1 only", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature": "sha1=00"}, body, 401, nil},
		{"gitea push", "POST", map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": sign(secret, body)}, body,
			202, &Push{Source: "gitea", Ref: "refs/heads/main", After: "0123456789abcdef0123456789abcdef01234567"}},
		{"forgejo push", "POST", map[string]string{"X-Forgejo-Event": "push", "X-Forgejo-Signature": sign(secret, body)}, body,
			202, &Push{Source: "forgejo", Ref: "refs/heads/main", After: "0123456789abcdef0123456789abcdef01234567"}},
		{"gitea wrong signature", "POST", map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": sign("x", body)}, body, 401, nil},
		{"gitlab push", "POST", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret}, body,
			202, &Push{Source: "gitlab", Ref: "refs/heads/main", After: "0123456789abcdef0123456789abcdef01234567"}},
		{"gitlab wrong token", "POST", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "guess"}, body, 401, nil},
		{"gitlab no token", "POST", map[string]string{"X-Gitlab-Event": "Push Hook"}, body, 401, nil},
		{"no forge headers", "POST", nil, body, 401, nil},
		{"GET", "GET", map[string]string{"X-GitHub-Event": "push"}, "", 405, nil},
		{"signed garbage", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(secret, "{")}, "{", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Push
			h := WebhookHandler([]byte(secret), func(p Push) { got = append(got, p) })
			req := httptest.NewRequest(tt.method, "/webhook", strings.NewReader(tt.body))
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Errorf("status %d, want %d (%s)", rec.Code, tt.code, rec.Body)
			}
			switch {
			case tt.push == nil && len(got) > 0:
				t.Errorf("triggered a sync: %+v", got)
			case tt.push != nil && (len(got) != 1 || got[0] != *tt.push):
				t.Errorf("pushes %+v, want %+v", got, *tt.push)
			}
		})
	}
}

func TestWebhookWithoutSecretRefusesAll(t *testing.T) {
	called := false
	h := WebhookHandler(nil, func(Push) { called = true })
	req := httptest.NewRequest("POST", "/webhook", strings.NewReader(`{"ref":"refs/heads/main"}`))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign("", `{"ref":"refs/heads/main"}`))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || called {
		t.Errorf("status %d, called %v", rec.Code, called)
	}
}

func TestWebhookBodyLimit(t *testing.T) {
	h := WebhookHandler([]byte("k"), func(Push) { t.Error("triggered") })
	req := httptest.NewRequest("POST", "/webhook", strings.NewReader(strings.Repeat("x", maxWebhookBody+1)))
	req.Header.Set("X-GitHub-Event", "push")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d", rec.Code)
	}
}

func TestPushBranch(t *testing.T) {
	if b := (Push{Ref: "refs/heads/release/1"}).Branch(); b != "release/1" {
		t.Errorf("branch %q", b)
	}
	if b := (Push{Ref: "refs/tags/v1"}).Branch(); b != "" {
		t.Errorf("tag branch %q", b)
	}
}
