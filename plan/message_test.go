package plan

import (
	"runtime"
	"strings"
	"testing"

	"cuelang.org/go/cue/cuecontext"
)

// TestDataStringIsShort checks that a value in a message is written only
// as far as the message shows it, whatever its depth and length: writing a
// 5,000-deep mapping whole took seconds and hundreds of MiB.
func TestDataStringIsShort(t *testing.T) {
	ctx := cuecontext.New()
	deep := ctx.CompileString("x: " + strings.Repeat("{a: ", 5000) + "1" + strings.Repeat("}", 5000))
	deepList := ctx.CompileString("x: " + strings.Repeat("[", 5000) + strings.Repeat("]", 5000))
	long := ctx.CompileString("x: [" + strings.Repeat("1, ", 10_000) + "1]")
	for _, tt := range []struct {
		name string
		got  func() string
		want string
	}{
		{"deep mapping", func() string { return dataString(deep, []string{"x"}) }, "(a mapping)"},
		{"deep list", func() string { return dataString(deepList, []string{"x"}) },
			"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[..."},
		{"long list", func() string { return dataString(long, []string{"x"}) },
			"[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,..."},
		{"short list", func() string { return dataString(ctx.CompileString(`x: [5, 1.0, "a", {}, {b: 1}, []]`), []string{"x"}) },
			`[5, 1.0, "a", {}, {...}, []]`},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got := tt.got()
		runtime.ReadMemStats(&after)
		if got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
			t.Errorf("%s: allocated %d KiB to write %d bytes", tt.name, alloc>>10, len(got))
		}
	}
}
