package shorthash

import "testing"

func TestOf(t *testing.T) {
	for in, want := range map[string]string{
		"":        "",
		"abc1234": "abc1234",
		"0123456789abcdef0123456789abcdef01234567": "0123456789ab",
	} {
		if got := Of(in); got != want {
			t.Errorf("Of(%q) = %q, want %q", in, got, want)
		}
	}
}
