package docker_test

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/docker"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// composeCommand returns the Compose command line: `docker compose`, else
// docker-compose.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	t.Fatal("neither `docker compose` nor docker-compose is installed: apt-get install -y docker-compose (.ci/run installs it)")
	return nil
}

// TestComposeProject scales services that Compose itself started, by
// replica ratio: the clones are containers of the same Compose project and
// service, which `compose ps` lists, and they answer to the services'
// shared network alias like the originals.
func TestComposeProject(t *testing.T) {
	t.Parallel()
	labels := dockertest.Labels(t)
	image := dockertest.TestAppImage(t)
	cli := dockertest.Client(t)
	project := dockertest.Name("proj")
	var lines []string
	for k, v := range labels {
		lines = append(lines, "      "+k+": \""+v+"\"")
	}
	slices.Sort(lines)
	testLabels := strings.Join(lines, "\n")
	file := dockertest.WriteFile(t, t.TempDir(), "compose.yaml", `services:
  api-v1:
    image: `+image+`
    command: [serve, -version, v1]
    labels:
      migrate.hal9.ai/replicas: "4"
`+testLabels+`
    networks:
      default:
        aliases: [api]
  api-v2:
    image: `+image+`
    command: [serve, -version, v2]
    labels:
`+testLabels+`
    networks:
      default:
        aliases: [api]
networks:
  default:
    labels:
`+testLabels+`
`)
	compose := func(args ...string) string {
		t.Helper()
		c := composeCommand(t)
		cmd := exec.Command(c[0], append(append(c[1:], "-p", project, "-f", file), args...)...)
		cmd.Env = append(os.Environ(), "COMPOSE_INTERACTIVE_NO_CLI=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
		}
		return string(out)
	}
	compose("up", "-d", "--no-build")
	t.Cleanup(func() {
		c := composeCommand(t)
		_ = exec.Command(c[0], append(c[1:], "-p", project, "-f", file, "down", "-v", "--remove-orphans")...).Run()
	})

	eng, err := docker.New(docker.Options{Client: cli, Labels: labels, ComposeProject: project})
	if err != nil {
		t.Fatal(err)
	}
	p := &plan.Plan{Metadata: plan.Metadata{Name: dockertest.Name("plan")}}
	p.Spec.Driver.Docker = &plan.DockerDriver{Stable: plan.DockerWorkload{Service: "api-v1"}, Candidate: plan.DockerWorkload{Service: "api-v2"}}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	d, err := eng.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	target := drivers.Target{Traffic: 50}
	if err := d.Apply(ctx, target); err != nil {
		t.Fatal(err)
	}
	st, err := drivertest.Converge(ctx, d, target, 25, time.Minute, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.StableReplicas != 2 || st.CandidateReplicas != 2 || st.Traffic != 50 {
		t.Errorf("50%% of 4 replicas = %+v, want 2 and 2", st)
	}
	for _, svc := range []string{"api-v1", "api-v2"} {
		ids := strings.Fields(compose("ps", "-q", svc))
		if len(ids) != 2 {
			t.Errorf("compose ps %s lists %d containers, want 2 (the original and a clone)", svc, len(ids))
		}
		for _, id := range ids {
			info, err := cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for net, ep := range info.Container.NetworkSettings.Networks {
				if strings.HasPrefix(net, project) && slices.Contains(ep.Aliases, "api") {
					found = true
				}
			}
			if !found {
				t.Errorf("container %s of %s does not answer to the alias api: %+v", info.Container.Name, svc, info.Container.NetworkSettings.Networks)
			}
		}
	}
}
