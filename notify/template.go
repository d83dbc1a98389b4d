package notify

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// funcs are what templates may call besides text/template's own.
var funcs = template.FuncMap{
	// short abbreviates a commit to 12 characters.
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	// num prints a value without trailing zeros.
	"num": func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'g', 6, 64)
	},
	"upper": strings.ToUpper,
}

// titles are the messages' titles, by event.
var titles = map[EventKind]string{
	Advanced:             "{{.Plan}} advanced to {{.To}}",
	Holding:              "{{.Plan}} holds at its target {{.To}}",
	Breach:               "{{.Plan}} breached{{with .Guardrail}} guardrail {{.}}{{end}}, holding at {{.From}}",
	Rollback:             "{{.Plan}} rolled back to {{.To}}",
	Frozen:               "{{.Plan}} frozen at {{.From}}",
	Completed:            "{{.Plan}} completed",
	PlanInvalid:          "{{.Plan}}: the plan is invalid",
	ChangeNotSigned:      "{{.Plan}}: a change is not signed",
	RollbackNotCommitted: "{{.Plan}}: a rollback is not committed",
	PromotionProposed:    "{{.Plan}}: promotion proposed",
	PromotionRefused:     "{{.Plan}}: promotion refused",
}

// failure is the part of a text that says what failed.
const failure = `{{if .Guardrail}}guardrail {{.Guardrail}} read {{num .Value}}{{with .Bound}} (bound {{.}}){{end}}` +
	`{{else}}{{.What}}{{end}}{{with .Member}} on group member {{.}}{{end}}`

// texts are the messages' default texts, by event.
var texts = map[EventKind]string{
	Advanced:             "{{.Plan}} moved from {{.From}} to {{.To}} (target {{.Target}}): {{.Reason}}. Commit {{short .Commit}}.",
	Holding:              "{{.Plan}} reached {{.To}}, its target, and holds there: {{.Reason}}. Commit {{short .Commit}}.",
	Breach:               "{{.Plan}} at {{.From}}: " + failure + ". Automatic rollback is off: it holds until a commit moves its target. Commit {{short .Commit}}.",
	Rollback:             "{{.Plan}} rolled back from {{.From}} to {{.To}}: " + failure + ". Commit {{short .Commit}}.",
	Frozen:               "{{.Plan}} is frozen at {{.From}}, past a point of no return: " + failure + ". Commit {{short .Commit}}.",
	Completed:            "{{.Plan}} reached {{.To}}, the end of its plan. Commit {{short .Commit}}.",
	PlanInvalid:          "{{.Reason}}",
	ChangeNotSigned:      "{{.Reason}}",
	RollbackNotCommitted: "{{.Reason}}",
	PromotionProposed:    "{{.Reason}}",
	PromotionRefused:     "{{.Reason}}",
}

// templates are a target's parsed templates: title and text by event.
type templates struct {
	title, text map[EventKind]*template.Template
}

// defaults are the parsed default templates.
var defaults = func() templates {
	t, err := parseTemplates(nil)
	if err != nil {
		panic(err)
	}
	return t
}()

// parseTemplates parses the default templates and a target's overrides of
// the texts, checking each override against a sample event so that a
// template that names a field Event lacks fails at configuration load.
func parseTemplates(overrides map[string]string) (templates, error) {
	t := templates{title: map[EventKind]*template.Template{}, text: map[EventKind]*template.Template{}}
	for _, k := range EventKinds {
		t.title[k] = template.Must(template.New(string(k)).Funcs(funcs).Option("missingkey=error").Parse(titles[k]))
		t.text[k] = template.Must(template.New(string(k)).Funcs(funcs).Option("missingkey=error").Parse(texts[k]))
	}
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, name := range keys {
		k := EventKind(name)
		if !slices.Contains(EventKinds, k) {
			return templates{}, fmt.Errorf("templates: %q is not an event; the events are %s", name, eventNames())
		}
		tt, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(overrides[name])
		if err != nil {
			return templates{}, fmt.Errorf("templates.%s: %w", name, err)
		}
		v := 0.5
		sample := Event{Kind: k, Plan: "checkout", From: "canary 10%", To: "canary 25%", Value: &v, Guardrail: "error-rate"}
		if err := tt.Execute(new(bytes.Buffer), sample); err != nil {
			return templates{}, fmt.Errorf("templates.%s: %w", name, err)
		}
		t.text[k] = tt
	}
	return t, nil
}

// render makes the message of e.
func (t templates) render(e Event) Message {
	m := Message{Event: e}
	m.Title = execute(t.title[e.Kind], e)
	m.Text = execute(t.text[e.Kind], e)
	return m
}

func execute(t *template.Template, e Event) string {
	if t == nil {
		return string(e.Kind) + " " + e.Plan
	}
	var b bytes.Buffer
	if err := t.Execute(&b, e); err != nil {
		return fmt.Sprintf("%s %s (template: %v)", e.Kind, e.Plan, err)
	}
	return b.String()
}
