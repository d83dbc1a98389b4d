package plan

import (
	"os"
	"testing"
)

var fuzzFormats = []string{".yaml", ".json", ".cue"}

// FuzzLoad feeds arbitrary files to the loader. It must never panic, every
// error must carry a position, and it must never accept a plan that CUE's own
// evaluation of the schema rejects.
func FuzzLoad(f *testing.F) {
	for i, name := range []string{"testdata/base.yaml", "testdata/base.json", "testdata/base.cue"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(i))
	}
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, format uint8) {
		src := Source{Path: "fuzz" + fuzzFormats[int(format)%len(fuzzFormats)], Data: data}
		set := v.Validate([]Source{src})
		for _, e := range set.Errors {
			if e.File != src.Path || e.Line < 1 || e.Column < 1 || e.Message == "" {
				t.Fatalf("error without a position or message: %#v", e)
			}
		}
		if len(set.Plans) == 0 {
			return
		}
		if len(set.Errors) > 0 {
			t.Fatalf("plan accepted with errors: %v", set.Errors)
		}
		doc, _ := parseForTest(t, src)
		if doc == nil {
			t.Fatalf("accepted a file that does not parse")
		}
		if err := cueJudges(t, v, doc); err != nil {
			t.Fatalf("accepted a plan the schema rejects: %v\n%s", err, data)
		}
	})
}
