package drivers_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/plan"
)

func TestSelect(t *testing.T) {
	docker := &plan.Plan{Spec: plan.Spec{Driver: plan.Driver{Docker: &plan.DockerDriver{}}}}
	docker.Metadata.Name = "shop"
	kube := &plan.Plan{Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{}}}}
	kube.Metadata.Name = "search"
	f := fake.New()

	open := drivers.Select(map[string]drivers.Opener{"docker": f.Opener()})
	if d, err := open(context.Background(), docker); err != nil || d == nil {
		t.Fatalf("docker plan: %v", err)
	}
	_, err := open(context.Background(), kube)
	if err == nil || !strings.Contains(err.Error(), `plan search uses the "kubernetes" driver`) || !strings.Contains(err.Error(), "docker is configured") {
		t.Fatalf("kubernetes plan with only docker configured: %v", err)
	}
	_, err = drivers.Select(nil)(context.Background(), kube)
	if err == nil || !strings.Contains(err.Error(), "none is configured") {
		t.Fatalf("no drivers: %v", err)
	}
}
