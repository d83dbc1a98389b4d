package plan

import (
	"strings"
	"testing"
)

// TestRunServiceAccount checks a job's serviceAccountName: a Kubernetes
// object name, and only with the kubernetes driver.
func TestRunServiceAccount(t *testing.T) {
	base := readBase(t)
	v := newValidator(t)
	const run = `      run: {image: "migrator:1", timeout: 30m}`
	const check = `    integrity: {run: {image: "migrator:1", command: [check]}}`

	src := strings.Replace(base, run, `      run: {image: "migrator:1", timeout: 30m, serviceAccountName: shop.migrator}`, 1)
	src = strings.Replace(src, check, `    integrity: {run: {image: "migrator:1", command: [check], serviceAccountName: shop-checker}}`, 1)
	set := v.Validate([]Source{{Path: "p.yaml", Data: []byte(src)}})
	if len(set.Errors) != 0 || len(set.Plans) != 1 {
		t.Fatalf("valid service accounts: %v", set.Errors)
	}
	p := set.Plans[0]
	if got := p.Spec.Phases[2].Run.ServiceAccountName; got != "shop.migrator" {
		t.Errorf("phase run service account %q", got)
	}
	if got := p.Spec.Verify["integrity"].Run.ServiceAccountName; got != "shop-checker" {
		t.Errorf("check run service account %q", got)
	}

	for _, tt := range []struct {
		name, old, new string
		want           []string
	}{
		{"not a subdomain", run, `      run: {image: "migrator:1", serviceAccountName: Shop_Migrator}`,
			[]string{`p.yaml:23:54: spec.phases.2.run.serviceAccountName: invalid value "Shop_Migrator" (expected a DNS-1123 subdomain (DNS labels joined by dots) and at most 253 characters)`}},
		{"too long", run, `      run: {image: "migrator:1", serviceAccountName: ` + strings.Repeat("a", 254) + `}`,
			[]string{`p.yaml:23:54: spec.phases.2.run.serviceAccountName: invalid value "` + strings.Repeat("a", 55) + `..." (expected a DNS-1123 subdomain (DNS labels joined by dots) and at most 253 characters)`}},
		{"with the docker driver", "    kubernetes:\n      traffic: {httpRoute: shop}\n      stable: {deployment: shop-v1}\n      candidate: {deployment: shop-v2}",
			"    docker:\n      traffic: {nginx: {container: router, upstream: shop}}\n      stable: {service: shop-v1}\n      candidate: {service: shop-v2}",
			nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.old) {
				t.Fatalf("base plan has no %q", tt.old)
			}
			src := strings.Replace(base, tt.old, tt.new, 1)
			if tt.want == nil {
				src = strings.Replace(src, run, `      run: {image: "migrator:1", serviceAccountName: migrator}`, 1)
				src = strings.Replace(src, check, `    integrity: {run: {image: "migrator:1", serviceAccountName: migrator}}`, 1)
				tt.want = []string{
					`p.yaml:23:54: spec.phases.2.run.serviceAccountName: a job runs as a ServiceAccount only on Kubernetes (expected no serviceAccountName with the docker driver)`,
					`p.yaml:41:64: spec.verify.integrity.run.serviceAccountName: a job runs as a ServiceAccount only on Kubernetes (expected no serviceAccountName with the docker driver)`,
				}
			}
			wantErrors(t, v.Validate([]Source{{Path: "p.yaml", Data: []byte(src)}}), tt.want)
		})
	}
}
