package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// clone creates a container like w's source container, and returns its id
// and name; it does not start it. The copy has the same image (by id, should the tag have
// moved since), command, environment, labels, mounts, restart policy and
// networks with their aliases; its published ports go to free host ports on
// the same addresses, and it gets its own name and host name.
func (d *Driver) clone(ctx context.Context, w *workload, role string) (id, name string, err error) {
	src, ok := w.source()
	if !ok {
		return "", "", fmt.Errorf("%s %s has no container to clone: start one first", w.sel.role, w.sel)
	}
	info := src.info
	if info.Config == nil || info.HostConfig == nil {
		return "", "", fmt.Errorf("container %s: the engine returned no configuration to clone", src.name)
	}
	cfg := *info.Config
	if cfg.Hostname == shortID(info.ID) {
		cfg.Hostname = "" // the engine's default, not the user's
	}
	cfg.Image = d.cloneImage(ctx, info)
	cfg.Labels = maps.Clone(cfg.Labels)
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	maps.Copy(cfg.Labels, d.opts.Labels)
	cfg.Labels[LabelPlan] = d.plan
	cfg.Labels[LabelRole] = role

	hc := *info.HostConfig
	hc.ContainerIDFile = ""
	hc.PortBindings = network.PortMap{}
	for port, bindings := range info.HostConfig.PortBindings {
		moved := make([]network.PortBinding, len(bindings))
		for i, b := range bindings {
			moved[i] = network.PortBinding{HostIP: b.HostIP}
		}
		hc.PortBindings[port] = moved
	}

	primary, extra := cloneNetworks(info)
	var netcfg *network.NetworkingConfig
	if primary != nil {
		netcfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{hc.NetworkMode.NetworkName(): primary}}
	}

	for attempt := 0; ; attempt++ {
		n, number, err := d.cloneName(ctx, w, src, role, attempt)
		if err != nil {
			return "", "", err
		}
		if number != "" {
			cfg.Labels[composeNumber] = number
		}
		res, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &cfg, HostConfig: &hc, NetworkingConfig: netcfg, Name: n})
		if cerrdefs.IsConflict(err) && attempt < 5 {
			continue // another container took the name meanwhile
		}
		if err != nil {
			return "", "", fmt.Errorf("clone %s container %s: %w", w.sel.role, src.name, err)
		}
		id, name = res.ID, n
		break
	}
	for _, net := range slices.Sorted(maps.Keys(extra)) {
		if _, err := d.cli.NetworkConnect(ctx, net, client.NetworkConnectOptions{Container: id, EndpointConfig: extra[net]}); err != nil {
			_, _ = d.cli.ContainerRemove(context.WithoutCancel(ctx), id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			return "", "", fmt.Errorf("connect the clone of %s to network %s: %w", src.name, net, err)
		}
	}
	d.opts.Log.Info("created a container", "plan", d.plan, "workload", w.sel.role, "role", role, "container", name, "from", src.name)
	return id, name, nil
}

// cloneImage is the image a clone runs: the source's image name if it still
// names the image the source runs, else that image's id.
func (d *Driver) cloneImage(ctx context.Context, info container.InspectResponse) string {
	name := info.Config.Image
	if name == "" || name == info.Image {
		return info.Image
	}
	img, err := d.cli.ImageInspect(ctx, name)
	if err != nil || img.ID != info.Image {
		return info.Image
	}
	return name
}

// cloneNetworks returns the endpoint settings of a clone: the one for the
// network the container is created on (nil for the default bridge, host or
// another container's namespace, which take no settings), and the others,
// joined before it starts. Addresses and MAC addresses are the engine's to
// choose; aliases stay, but for the source's own name and id.
func cloneNetworks(info container.InspectResponse) (*network.EndpointSettings, map[string]*network.EndpointSettings) {
	if info.NetworkSettings == nil {
		return nil, nil
	}
	mode := info.HostConfig.NetworkMode
	if mode.IsHost() || mode.IsNone() || mode.IsContainer() {
		return nil, nil
	}
	own := map[string]bool{strings.TrimPrefix(info.Name, "/"): true, shortID(info.ID): true, info.ID: true}
	settings := func(ep *network.EndpointSettings) *network.EndpointSettings {
		out := &network.EndpointSettings{Links: slices.Clone(ep.Links), DriverOpts: maps.Clone(ep.DriverOpts)}
		for _, a := range ep.Aliases {
			if !own[a] {
				out.Aliases = append(out.Aliases, a)
			}
		}
		return out
	}
	var primary *network.EndpointSettings
	extra := map[string]*network.EndpointSettings{}
	for name, ep := range info.NetworkSettings.Networks {
		if ep == nil {
			continue
		}
		switch {
		case name == mode.NetworkName():
			if mode.IsUserDefined() {
				primary = settings(ep)
			}
		case name == "bridge" || name == "host" || name == "none":
			// Only the container's primary network may be a default one.
		default:
			extra[name] = settings(ep)
		}
	}
	return primary, extra
}

// cloneName names a new container of w: after Compose's pattern
// (project-service-N, with the next free number) for a service, or the
// name prefix and a number. A template gets "-template" and a random part.
func (d *Driver) cloneName(ctx context.Context, w *workload, src member, role string, attempt int) (name, number string, err error) {
	if role == RoleTemplate {
		return src.name + "-template-" + randomHex(3), "", nil
	}
	if w.sel.service != "" {
		project := src.labels[composeProject]
		sep := "-"
		if strings.HasPrefix(src.name, project+"_") {
			sep = "_" // Compose v1
		}
		f := client.Filters{}.Add("label", composeService+"="+w.sel.service).Add("label", composeProject+"="+project)
		list, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			return "", "", fmt.Errorf("number a clone of %s: %w", src.name, err)
		}
		next := 0
		for _, c := range list.Items {
			if n, err := strconv.Atoi(c.Labels[composeNumber]); err == nil {
				next = max(next, n)
			}
		}
		next += 1 + attempt
		number = strconv.Itoa(next)
		base := w.sel.service
		if project != "" {
			base = project + sep + w.sel.service
		}
		return base + sep + number, number, nil
	}
	list, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("name", namePrefixFilter(w.sel.prefix))})
	if err != nil {
		return "", "", fmt.Errorf("name a clone of %s: %w", src.name, err)
	}
	taken := map[string]bool{}
	for _, c := range list.Items {
		taken[containerName(c.Names)] = true
	}
	sep := "-"
	if strings.HasSuffix(w.sel.prefix, "-") || strings.HasSuffix(w.sel.prefix, "_") {
		sep = ""
	}
	for n := 2 + attempt; ; n++ {
		name := w.sel.prefix + sep + strconv.Itoa(n)
		if !taken[name] && d.belongs(w.sel, name, nil) {
			return name, "", nil
		}
		if n > 10000 {
			return w.sel.prefix + sep + randomHex(4), "", nil
		}
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
