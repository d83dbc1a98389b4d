// Package forgetest gives tests a forge to talk to: a real Gitea on
// 127.0.0.1 (gitea.go), and, for GitHub and GitLab, which cannot run
// here, a server replaying recorded API exchanges (this file).
package forgetest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// Exchange is one recorded request and the forge's answer to it.
type Exchange struct {
	Request struct {
		Method string `json:"method"`
		// Path is the escaped path, with the query if any.
		Path string `json:"path"`
		// Headers must be present with these values; Authorization and
		// PRIVATE-TOKEN are compared with the test's token put in for
		// "$TOKEN".
		Headers map[string]string `json:"headers"`
		// Body is the JSON body expected; a string value "$ANY" matches
		// any value of the field, checked by the test from Bodies.
		Body map[string]any `json:"body,omitempty"`
	} `json:"request"`
	Response struct {
		Status int             `json:"status"`
		Body   json.RawMessage `json:"body"`
	} `json:"response"`
}

// Replay is an httptest server that answers the recorded exchanges in
// order, failing the test on any request that differs from the next one.
type Replay struct {
	URL string
	// Bodies are the JSON bodies received, in order.
	Bodies []map[string]any

	t     testing.TB
	mu    sync.Mutex
	next  int
	steps []Exchange
	token string
}

// NewReplay serves the exchanges in file (a JSON array of Exchange) and
// checks at the test's end that every one was asked for.
func NewReplay(t testing.TB, file, token string) *Replay {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := &Replay{t: t, token: token}
	if err := json.Unmarshal(data, &r.steps); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = srv.URL
	t.Cleanup(func() {
		srv.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.next != len(r.steps) {
			t.Errorf("%s: %d of %d recorded exchanges were asked for", file, r.next, len(r.steps))
		}
	})
	return r
}

func (r *Replay) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next >= len(r.steps) {
		r.t.Errorf("unexpected request %s %s: every recorded exchange was used", req.Method, req.URL.RequestURI())
		http.Error(w, `{"message":"not recorded"}`, http.StatusNotImplemented)
		return
	}
	x := r.steps[r.next]
	r.next++
	want := x.Request
	if req.Method != want.Method || req.URL.RequestURI() != want.Path {
		r.t.Errorf("exchange %d: got %s %s, recorded %s %s", r.next, req.Method, req.URL.RequestURI(), want.Method, want.Path)
	}
	for k, v := range want.Headers {
		v = strings.ReplaceAll(v, "$TOKEN", r.token)
		if got := req.Header.Get(k); got != v {
			r.t.Errorf("exchange %d: header %s: got %q, recorded %q", r.next, k, got, v)
		}
	}
	body, _ := io.ReadAll(req.Body)
	if want.Body != nil {
		if ct := req.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			r.t.Errorf("exchange %d: Content-Type %q, not JSON", r.next, ct)
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			r.t.Errorf("exchange %d: body is not JSON: %v: %s", r.next, err, body)
		}
		r.Bodies = append(r.Bodies, got)
		for k, v := range want.Body {
			if v == "$ANY" {
				if _, ok := got[k]; !ok {
					r.t.Errorf("exchange %d: body has no field %q", r.next, k)
				}
				continue
			}
			if !reflect.DeepEqual(got[k], v) {
				r.t.Errorf("exchange %d: body field %q: got %#v, recorded %#v", r.next, k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want.Body[k]; !ok {
				r.t.Errorf("exchange %d: body field %q was not in the recorded request", r.next, k)
			}
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(x.Response.Status)
	_, _ = w.Write(x.Response.Body)
}
