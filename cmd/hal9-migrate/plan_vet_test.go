package main

import (
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
)

func TestGithubAnnotation(t *testing.T) {
	tests := []struct {
		in   plan.Error
		want string
	}{
		{plan.Error{File: "plans/a.yaml", Line: 3, Column: 7, Path: "spec.target", Message: "bad"},
			"::error file=plans/a.yaml,line=3,col=7,title=hal9-migrate plan vet::spec.target: bad"},
		// Without a position, the annotation is on the file.
		{plan.Error{File: "plans", Message: "cannot read: no such file or directory"},
			"::error file=plans,title=hal9-migrate plan vet::cannot read: no such file or directory"},
		// Properties escape the separators; data escapes only %, CR and LF.
		{plan.Error{File: "a:b,c%.yaml", Line: 1, Column: 1, Message: "100% sure\r\nline 2: a, b"},
			"::error file=a%3Ab%2Cc%25.yaml,line=1,col=1,title=hal9-migrate plan vet::100%25 sure%0D%0Aline 2: a, b"},
	}
	for _, tt := range tests {
		if got := githubAnnotation(tt.in); got != tt.want {
			t.Errorf("githubAnnotation(%+v)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

func TestLong(t *testing.T) {
	for in, want := range map[string]string{
		"0s": "0s", "90m": "1h30m", "24h": "24h", "36h": "36h (1d12h)", "96h": "96h (4d)", "48h30m": "48h30m (2d30m)",
	} {
		var d plan.Duration
		if err := d.UnmarshalJSON([]byte(`"` + in + `"`)); err != nil {
			t.Fatal(err)
		}
		if got := long(d); got != want {
			t.Errorf("long(%s) = %q, want %q", in, got, want)
		}
	}
}
