package dockertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HostHAProxy is an HAProxy the test runs on the host in the foreground:
// a frontend on Addr sending every request to one backend with no servers,
// for the Docker driver to fill through the runtime API, which listens at
// admin level on a unix socket (Socket) and on a loopback port (TCP).
type HostHAProxy struct {
	Addr   string // 127.0.0.1:PORT of the frontend
	Socket string // the runtime API's unix socket
	TCP    string // the runtime API's 127.0.0.1:PORT
	Conf   string
	cmd    *exec.Cmd
}

// HAProxyBinary returns the path of the machine's haproxy, failing the test
// when there is none.
func HAProxyBinary(t testing.TB) string {
	t.Helper()
	return hostBinary(t, "haproxy", "haproxy")
}

// HAProxyConf returns an haproxy.cfg with a frontend on listen sending to
// backend, and the runtime API at admin level on socket and tcp.
func HAProxyConf(listen, backend, socket, tcp string) string {
	return fmt.Sprintf(`global
    stats socket %s level admin
    stats socket ipv4@%s level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind %s
    default_backend %s
backend %s
    balance roundrobin
`, socket, tcp, listen, backend, backend)
}

// StartHostHAProxy writes the configuration of backend on free 127.0.0.1
// ports, starts HAProxy and waits until its frontend accepts connections. It
// stops HAProxy when t ends.
func StartHostHAProxy(t testing.TB, backend string) *HostHAProxy {
	t.Helper()
	bin := HAProxyBinary(t)
	// A unix socket's path is short: not under t.TempDir's long name.
	dir, err := os.MkdirTemp("", "hal9-haproxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &HostHAProxy{
		Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
		Socket: filepath.Join(dir, "admin.sock"),
		TCP:    net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
	}
	h.Conf = WriteFile(t, dir, "haproxy.cfg", HAProxyConf(h.Addr, backend, h.Socket, h.TCP))
	out, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(bin, "-db", "-f", h.Conf)
	h.cmd.Stdout, h.cmd.Stderr = out, out
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { h.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = h.cmd.Process.Kill()
			<-exited
		}
		out.Close()
	})
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			log, _ := os.ReadFile(out.Name())
			t.Fatalf("haproxy exited at start:\n%s", log)
		default:
		}
		c, err := net.DialTimeout("unix", h.Socket, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("haproxy's runtime API does not answer after 10s: %v", err)
		}
	}
	return h
}

// PID is the HAProxy process's id.
func (h *HostHAProxy) PID() int { return h.cmd.Process.Pid }

// Info is HAProxy's "show info" as a map, read on its unix socket.
func (h *HostHAProxy) Info(t testing.TB) map[string]string {
	t.Helper()
	c, err := net.DialTimeout("unix", h.Socket, 5*time.Second)
	if err != nil {
		t.Fatalf("haproxy's runtime API: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("show info\n")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	info := map[string]string{}
	for _, line := range strings.Split(b.String(), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			info[k] = strings.TrimSpace(v)
		}
	}
	return info
}
