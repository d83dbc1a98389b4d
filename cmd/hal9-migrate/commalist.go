package main

import "strings"

// commaList is a flag of comma-separated words. Its String reads back
// through Set, as resolveDaemonConfig needs when it sets a flag again
// over the config file (pflag's own string slice prints "[a,b]").
type commaList []string

func (l *commaList) String() string { return strings.Join(*l, ",") }

func (l *commaList) Set(s string) error {
	*l = nil
	for w := range strings.SplitSeq(s, ",") {
		if w = strings.TrimSpace(w); w != "" {
			*l = append(*l, w)
		}
	}
	return nil
}

func (l *commaList) Type() string { return "strings" }
