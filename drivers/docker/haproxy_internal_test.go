package docker

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// RouteHAProxy and ObserveHAProxy give the tests of package docker_test
// the HAProxy router of d's plan through backend, over d's workloads as
// they are at the call.
func RouteHAProxy(ctx context.Context, d *Driver, backend string, sp traffic.Split) error {
	r, ws, err := haproxyFor(ctx, d, backend)
	if err != nil {
		return err
	}
	return r.Route(ctx, ws, sp)
}

func ObserveHAProxy(ctx context.Context, d *Driver, backend string) (traffic.Split, error) {
	r, ws, err := haproxyFor(ctx, d, backend)
	if err != nil {
		return traffic.Split{}, err
	}
	return r.Observe(ctx, ws)
}

func haproxyFor(ctx context.Context, d *Driver, backend string) (router, *workloads, error) {
	r, err := openHAProxy(d, plan.DockerTraffic{HAProxy: &plan.HAProxyRouter{Backend: backend}})
	if err != nil {
		return nil, nil, err
	}
	ws, err := d.load(ctx)
	return r, ws, err
}

// serversState is an answer of HAProxy 2.6 to "show servers state web".
const serversState = `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web 1 stable_app 127.0.0.1 2 0 3 3 4 1 0 0 0 0 0 0 - 32768 - 0 0 - - 0
3 web 2 candidate_app-v2 127.0.0.1 2 0 1 1 4 1 0 0 0 0 0 0 - 32769 - 0 0 - - 0
3 web 3 candidate_gone 127.0.0.1 0 1 1 1 4 1 0 0 0 0 0 0 - 32770 - 0 0 - - 0
3 web 4 legacy ::1 2 0 1 1 4 1 0 0 0 0 0 0 - 80 - 0 0 - - 0
4 other 1 stable_x 127.0.0.1 2 0 1 1 4 1 0 0 0 0 0 0 - 80 - 0 0 - - 0

`

func TestHAProxyServersState(t *testing.T) {
	got, err := parseServersState(serversState, "web")
	if err != nil {
		t.Fatal(err)
	}
	want := []haproxyServer{
		{name: "stable_app", role: roleStable, addr: "127.0.0.1:32768", weight: 3},
		{name: "candidate_app-v2", role: roleCandidate, addr: "127.0.0.1:32769", weight: 1},
		{name: "candidate_gone", role: roleCandidate, addr: "127.0.0.1:32770", weight: 1, maint: true},
		{name: "legacy", addr: "[::1]:80", weight: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	header := strings.SplitN(serversState, "\n", 3)[:2]
	for _, tc := range []struct{ name, answer, err string }{
		{"no backend", "Can't find backend.\n\n", `want the state format 1, HAProxy answered "Can't find backend."`},
		{"empty", "", "no column names"},
		{"no header", "1\n3 web 1 a 127.0.0.1\n", "line 2: want the column names"},
		{"missing column", "1\n# be_name srv_name srv_addr srv_port srv_admin_state\n", "line 2: no column srv_uweight"},
		{"short line", strings.Join(header, "\n") + "\n3 web 1 stable_a 127.0.0.1 2\n", "line 3: 6 columns, want 25"},
		{"weight too big", strings.Join(header, "\n") + "\n3 web 1 stable_a 127.0.0.1 2 0 300 3 4 1 0 0 0 0 0 0 - 80 - 0 0 - - 0\n", `line 3: server stable_a: weight "300"`},
		{"bad port", strings.Join(header, "\n") + "\n3 web 1 stable_a 127.0.0.1 2 0 3 3 4 1 0 0 0 0 0 0 - 99999 - 0 0 - - 0\n", `line 3: server stable_a: port "99999"`},
		{"bad address", strings.Join(header, "\n") + "\n3 web 1 stable_a example.com 2 0 3 3 4 1 0 0 0 0 0 0 - 80 - 0 0 - - 0\n", `server stable_a: address "example.com"`},
		{"bad name", strings.Join(header, "\n") + "\n3 web 1 stable;a 127.0.0.1 2 0 3 3 4 1 0 0 0 0 0 0 - 80 - 0 0 - - 0\n", `line 3: server name "stable;a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseServersState(tc.answer, "web")
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %v, want an error with %q", err, tc.err)
			}
		})
	}
}

// FuzzHAProxyServersState checks that no answer makes the parser panic,
// and that what it accepts is usable: weights within HAProxy's range and
// addresses with a port.
func FuzzHAProxyServersState(f *testing.F) {
	f.Add(serversState)
	f.Add("1\n# be_name srv_name srv_addr srv_port srv_admin_state srv_uweight\nweb stable_a 127.0.0.1 80 0 256\n")
	f.Add("Can't find backend.\n")
	f.Fuzz(func(t *testing.T, answer string) {
		servers, err := parseServersState(answer, "web")
		if err != nil {
			return
		}
		for _, s := range servers {
			if s.weight < 0 || s.weight > haproxyMaxWeight || !strings.Contains(s.addr, ":") || !haproxyName.MatchString(s.name) {
				t.Errorf("accepted %+v", s)
			}
		}
	})
}

func TestHAProxyWeights(t *testing.T) {
	for _, tc := range []struct {
		percent, ns, nc int
		ws, wc          []int
	}{
		{0, 1, 1, []int{1}, []int{0}},
		{100, 2, 1, []int{0, 0}, []int{1}},
		{25, 1, 1, []int{3}, []int{1}},
		{50, 2, 1, []int{1, 1}, []int{2}},
		{10, 1, 3, []int{27}, []int{1, 1, 1}},
		{33, 1, 1, []int{67}, []int{33}},
		{1, 1, 4, []int{256}, []int{1, 1, 1, 0}},
		{99, 10, 1, []int{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}, []int{198}},
	} {
		ws, wc, err := haproxyWeights(tc.percent, tc.ns, tc.nc)
		if err != nil || !reflect.DeepEqual(ws, tc.ws) || !reflect.DeepEqual(wc, tc.wc) {
			t.Errorf("haproxyWeights(%d, %d, %d) = %v, %v, %v; want %v, %v", tc.percent, tc.ns, tc.nc, ws, wc, err, tc.ws, tc.wc)
		}
	}
	// Every share, at the replica counts a plan runs, comes out as asked.
	sum := func(ws []int) int {
		n := 0
		for _, w := range ws {
			if w < 0 || w > haproxyMaxWeight {
				t.Errorf("weight %d", w)
			}
			n += w
		}
		return n
	}
	for p := 0; p <= 100; p++ {
		for ns := 1; ns <= 10; ns++ {
			for nc := 1; nc <= 10; nc++ {
				ws, wc, err := haproxyWeights(p, ns, nc)
				if err != nil {
					t.Errorf("haproxyWeights(%d, %d, %d): %v", p, ns, nc, err)
					continue
				}
				s, c := sum(ws), sum(wc)
				if got := traffic.Share(c, s+c); got != p || len(ws) != ns || len(wc) != nc {
					t.Errorf("haproxyWeights(%d, %d, %d) = %v, %v: a share of %d%%", p, ns, nc, ws, wc, got)
				}
			}
		}
	}
}

func TestHAProxyCommands(t *testing.T) {
	have := []haproxyServer{
		{name: "stable_a", role: roleStable, addr: "127.0.0.1:1000", weight: 1},
		{name: "candidate_b", role: roleCandidate, addr: "127.0.0.1:2000", weight: 0},
		{name: "candidate_old", role: roleCandidate, addr: "127.0.0.1:3000", weight: 1},
		{name: "candidate_drained", role: roleCandidate, addr: "127.0.0.1:4000", weight: 1, maint: true},
	}
	want := []haproxyServer{
		{name: "stable_a", role: roleStable, addr: "127.0.0.1:1000", weight: 3},
		{name: "candidate_b", role: roleCandidate, addr: "127.0.0.1:2001", weight: 1},
		{name: "candidate_c", role: roleCandidate, addr: "127.0.0.1:5000", weight: 1},
	}
	cmds, err := haproxyCommands("web", have, want)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range cmds {
		lines = append(lines, c.line)
	}
	wantLines := []string{
		"set weight web/stable_a 3",
		"set server web/candidate_b addr 127.0.0.1 port 2001",
		"set weight web/candidate_b 1",
		"add server web/candidate_c 127.0.0.1:5000 weight 1",
		"enable server web/candidate_c",
		"disable server web/candidate_old",
		"del server web/candidate_old",
		"del server web/candidate_drained",
	}
	if !reflect.DeepEqual(lines, wantLines) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
	if again, _ := haproxyCommands("web", want, want); len(again) != 0 {
		t.Errorf("routing again what is there sends %v, want nothing", again)
	}
	if _, err := haproxyCommands("web", []haproxyServer{{name: "legacy", addr: "127.0.0.1:80"}}, want); err == nil || !strings.Contains(err.Error(), "legacy, which the driver did not add") {
		t.Errorf("a server of the configuration: got %v, want an error naming it", err)
	}

	// The answers HAProxy 2.6 gives.
	for _, tc := range []struct {
		cmd    haproxyCommand
		answer string
		ok     bool
	}{
		{cmds[0], "\n", true},
		{cmds[0], "No such server.\n\n", false},
		{cmds[1], "no need to change the addr, port changed from '2000' to '2001' by 'stats socket command'\n\n", true},
		{cmds[3], "New server registered.\n\n", true},
		{cmds[3], "Already exists a server with the same name in backend.\n\n", false},
		{cmds[6], "Server deleted.\n", true},
		{cmds[6], "Only servers in maintenance mode can be deleted.\n", false},
	} {
		if got := tc.cmd.succeeded(tc.answer); got != tc.ok {
			t.Errorf("%q answered %q: succeeded %v, want %v", tc.cmd.line, tc.answer, got, tc.ok)
		}
	}
}

func TestHAProxyShare(t *testing.T) {
	servers, err := parseServersState(serversState, "web")
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]string{"127.0.0.1:32768": roleStable, "127.0.0.1:32769": roleCandidate, "127.0.0.1:32770": roleCandidate}
	if got := haproxyShare(servers, live); got != (traffic.Split{Traffic: 25}) {
		t.Errorf("got %v, want 25%%: the server in maintenance and the one not the driver's take nothing", got)
	}
	// The candidate's container restarted on another port: its server
	// takes nothing.
	delete(live, "127.0.0.1:32769")
	if got := haproxyShare(servers, live); got.Traffic != 0 {
		t.Errorf("got %v, want 0%%", got)
	}
}

func TestHAProxyCheckAndAddress(t *testing.T) {
	r := &haproxyRouter{backend: "web"}
	if err := r.Check(nil, traffic.Split{Traffic: 10}); err != nil {
		t.Error(err)
	}
	err := r.Check(nil, traffic.Split{Mirror: 10})
	if !errors.Is(err, traffic.ErrCannotMirror) || !strings.Contains(err.Error(), "traffic.nginx") {
		t.Errorf("mirror: got %v, want ErrCannotMirror naming traffic.nginx", err)
	}
	for addr, ok := range map[string]bool{"/run/haproxy/admin.sock": true, "127.0.0.1:9999": true, "[::1]:9999": true, "10.0.0.1:9999": false, "haproxy:9999": false, "": false} {
		if _, err := parseRuntimeAPI(addr); (err == nil) != ok {
			t.Errorf("parseRuntimeAPI(%q): %v", addr, err)
		}
	}
}
