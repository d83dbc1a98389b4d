package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one tool's run, as the JSON files hold it.
type result struct {
	Tool       string    `json:"tool"`
	Version    string    `json:"version,omitempty"`
	Kubernetes string    `json:"kubernetes,omitempty"`
	N          int       `json:"n"`
	Reactions  int       `json:"reactions"`
	Replicas   int       `json:"replicas"`
	Pause      string    `json:"pause"`
	RestWindow string    `json:"restWindow"`
	Started    time.Time `json:"started"`
	Seconds    float64   `json:"seconds"`

	SetupSeconds float64 `json:"setupSeconds"`
	// RestRequestsPerMin are the controller's own requests at rest, as
	// the apiserver counted them under its FlowSchema.
	RestRequestsPerMin float64 `json:"restRequestsPerMin"`
	// RestAllRequestsPerMin is every request the apiserver served in
	// the window at rest; RestAllMinusBaseline that less the baseline
	// window's, taken before the controller started.
	RestAllRequestsPerMin  float64 `json:"restAllRequestsPerMin"`
	BaselineRequestsPerMin float64 `json:"baselineRequestsPerMin"`
	RestAllMinusBaseline   float64 `json:"restAllMinusBaseline"`
	RestCPUSecondsPerMin   float64 `json:"restCPUSecondsPerMin"`
	RestRSSMiB             float64 `json:"restRSSMiB"`
	PeakRSSMiB             float64 `json:"peakRSSMiB"`

	ReactionCount int     `json:"reactionCount"`
	ReactionP50   float64 `json:"reactionP50Seconds"`
	ReactionP99   float64 `json:"reactionP99Seconds"`
	ReactionMax   float64 `json:"reactionMaxSeconds"`
	// ReactionSpansP50 is, for a tool that traces its work, the p50
	// duration of each kind of span during the reaction phase, in
	// seconds: where a reaction's time goes.
	ReactionSpansP50 map[string]float64 `json:"reactionSpansP50Seconds,omitempty"`

	FleetCompleted   int     `json:"fleetCompleted"`
	FleetWallSeconds float64 `json:"fleetWallSeconds"`
	FleetEachP50     float64 `json:"fleetEachP50Seconds"`
	FleetEachP99     float64 `json:"fleetEachP99Seconds"`
	FleetReactionP50 float64 `json:"fleetReactionP50Seconds"`
	FleetReactionP99 float64 `json:"fleetReactionP99Seconds"`
	FleetCPUSeconds  float64 `json:"fleetCPUSeconds"`

	// LoadAtRest and LoadAtEnd are the machine's one-minute load average
	// after the window at rest and at the end.
	LoadAtRest string `json:"loadAtRest"`
	LoadAtEnd  string `json:"loadAtEnd"`
}

func printReport(w io.Writer, files []string) error {
	var rs []*result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r result
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		rs = append(rs, &r)
	}
	printResults(w, rs)
	return nil
}

// printResults prints one column per tool.
func printResults(w io.Writer, rs []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label string, f func(*result) string) {
		fmt.Fprint(tw, label+"\t")
		for _, r := range rs {
			fmt.Fprint(tw, f(r)+"\t")
		}
		fmt.Fprintln(tw)
	}
	num := func(format string, f func(*result) float64) func(*result) string {
		return func(r *result) string { return fmt.Sprintf(format, f(r)) }
	}
	row("", func(r *result) string { return r.Tool })
	row("version", func(r *result) string { return r.Version })
	row("canaries × replicas", func(r *result) string { return fmt.Sprintf("%d × %d", r.N, r.Replicas) })
	row("setup (s)", num("%.0f", func(r *result) float64 { return r.SetupSeconds }))
	row("API requests/min at rest (own FlowSchema)", num("%.0f", func(r *result) float64 { return r.RestRequestsPerMin }))
	row("API requests/min at rest (all − baseline)", num("%.0f", func(r *result) float64 { return r.RestAllMinusBaseline }))
	row("CPU s/min at rest", num("%.2f", func(r *result) float64 { return r.RestCPUSecondsPerMin }))
	row("RSS at rest (MiB)", num("%.0f", func(r *result) float64 { return r.RestRSSMiB }))
	row("peak RSS (MiB)", num("%.0f", func(r *result) float64 { return r.PeakRSSMiB }))
	row("reaction p50 (s)", num("%.2f", func(r *result) float64 { return r.ReactionP50 }))
	row("reaction p99 (s)", num("%.2f", func(r *result) float64 { return r.ReactionP99 }))
	row("reaction: span p50s (s)", func(r *result) string {
		if len(r.ReactionSpansP50) == 0 {
			return "—"
		}
		names := slices.Sorted(maps.Keys(r.ReactionSpansP50))
		var b strings.Builder
		for i, n := range names {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%s=%.3f", n, r.ReactionSpansP50[n])
		}
		return b.String()
	})
	row("reactions measured", func(r *result) string { return fmt.Sprintf("%d/%d", r.ReactionCount, r.Reactions) })
	row("fleet wall time (s)", num("%.0f", func(r *result) float64 { return r.FleetWallSeconds }))
	row("fleet completed", func(r *result) string { return fmt.Sprintf("%d/%d", r.FleetCompleted, r.N) })
	row("fleet: each canary p50/p99 (s)", func(r *result) string { return fmt.Sprintf("%.0f/%.0f", r.FleetEachP50, r.FleetEachP99) })
	row("fleet: reaction p50/p99 (s)", func(r *result) string { return fmt.Sprintf("%.1f/%.1f", r.FleetReactionP50, r.FleetReactionP99) })
	row("fleet: controller CPU (s)", num("%.1f", func(r *result) float64 { return r.FleetCPUSeconds }))
	row("load average at rest / at end", func(r *result) string { return r.LoadAtRest + " / " + r.LoadAtEnd })
	row("run (s)", num("%.0f", func(r *result) float64 { return r.Seconds }))
	tw.Flush()
}
