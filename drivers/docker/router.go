package docker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/network"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// router carries the split between this driver's workloads.
type router = traffic.Router[*workloads]

// routers open the traffic router a plan's spec.driver.docker.traffic
// names, by plan.DockerTraffic.Kind: they check its settings and contact
// nothing. A new router is a file that implements router, and a line here.
var routers = map[string]func(d *Driver, t plan.DockerTraffic) (router, error){
	"nginx":   openNginx,
	"haproxy": openHAProxy,
}

// What a router may need of the driver besides Check, Observe and Route.
type (
	// claimer writes files that no other plan of the engine may write.
	claimer interface{ claims() []string }
	// starter prepares the router when the driver opens, before any
	// apply: nginx gets files it can start with.
	starter interface {
		start(ctx context.Context) error
	}
	// housed is a router that runs in a container, named by container
	// (empty: on the host). The driver finds it as the workloads'
	// router member, and never counts it among the workloads.
	housed interface{ container() string }
)

// openRouter returns the router of t, or the replica ratio without one.
func openRouter(d *Driver, t *plan.DockerTraffic) (router, error) {
	if t == nil {
		return &traffic.ByReplicas[*workloads]{Share: runningShare, Mirror: ErrMirrorNeedsRouter}, nil
	}
	open, ok := routers[t.Kind()]
	if !ok {
		return nil, fmt.Errorf("plan %s: no %q router in the docker driver", d.plan, t.Kind())
	}
	return open(d, *t)
}

// runningShare is the candidate's share of the running containers, which
// is its share of the traffic by replica ratio.
func runningShare(ws *workloads) int {
	c := len(ws.cand.running())
	return traffic.Share(c, len(ws.stable.running())+c)
}

// backend is one server a router sends requests to.
type backend struct {
	role string // roleStable or roleCandidate
	name string // the container's name
	addr string // host:port
}

// backendsOf are the members ms of one side as the router ws.router (nil:
// on the host) reaches them.
func (d *Driver) backendsOf(ws *workloads, ms []member, role string) ([]backend, error) {
	addr := d.backendAddr(ws.router)
	var out []backend
	for _, m := range ms {
		a, err := addr(m)
		if err != nil {
			return nil, err
		}
		out = append(out, backend{role: role, name: m.name, addr: a})
	}
	return out, nil
}

// liveAddrs maps the address of every running member of ws, as the router
// reaches it, to its side: a router's server whose address is not there (a
// container that restarted with another address, or went) takes nothing.
func (d *Driver) liveAddrs(ws *workloads) map[string]string {
	addr := d.backendAddr(ws.router)
	live := map[string]string{}
	for _, w := range []*workload{ws.stable, ws.cand} {
		for _, m := range w.running() {
			if a, err := addr(m); err == nil {
				live[a] = w.sel.role
			}
		}
	}
	return live
}

// backendAddr returns how a router reaches a member: its address on a
// network it shares with the router's container, or, for a router on the
// host (router nil), the host address its port is published on.
func (d *Driver) backendAddr(router *member) func(member) (string, error) {
	return func(m member) (string, error) {
		port, err := appPort(m)
		if err != nil {
			return "", err
		}
		if m.info.NetworkSettings == nil {
			return "", fmt.Errorf("container %s has no network settings", m.name)
		}
		if router == nil {
			for _, b := range m.info.NetworkSettings.Ports[port] {
				if b.HostPort == "" {
					continue
				}
				ip := b.HostIP
				switch {
				case !ip.IsValid() || ip == netip.IPv4Unspecified():
					ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
				case ip == netip.IPv6Unspecified():
					ip = netip.IPv6Loopback()
				}
				return net.JoinHostPort(ip.String(), b.HostPort), nil
			}
			return "", fmt.Errorf("container %s publishes no host port for %s, which a router on the host needs", m.name, port)
		}
		if router.info.NetworkSettings != nil {
			for _, name := range sortedKeys(router.info.NetworkSettings.Networks) {
				ep := m.info.NetworkSettings.Networks[name]
				if ep != nil && ep.IPAddress.IsValid() {
					return net.JoinHostPort(ep.IPAddress.String(), strconv.Itoa(int(port.Num()))), nil
				}
			}
		}
		return "", fmt.Errorf("container %s shares no network with the router container %s", m.name, router.name)
	}
}

// appPort is the container port requests go to: LabelPort, else the one TCP
// port the container exposes.
func appPort(m member) (network.Port, error) {
	if v := m.labels[LabelPort]; v != "" {
		if !strings.Contains(v, "/") {
			v += "/tcp"
		}
		p, err := network.ParsePort(v)
		if err != nil {
			return network.Port{}, fmt.Errorf("container %s: label %s=%q: %w", m.name, LabelPort, m.labels[LabelPort], err)
		}
		return p, nil
	}
	var tcp []network.Port
	if m.info.Config != nil {
		for p := range m.info.Config.ExposedPorts {
			if p.Proto() == network.TCP {
				tcp = append(tcp, p)
			}
		}
	}
	if len(tcp) != 1 {
		return network.Port{}, fmt.Errorf("container %s exposes %d TCP ports: label it %s=PORT to say which one takes requests", m.name, len(tcp), LabelPort)
	}
	return tcp[0], nil
}
