package gitops

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshServer is a small git-over-SSH server on 127.0.0.1: x/crypto/ssh for
// the protocol, the git CLI (`git upload-pack`, `git receive-pack`) for the
// git side, as sshd would run them. It exists to check what Repo does over
// ssh: the host key check, key authentication, fetch and push.
type sshServer struct {
	addr    string // host:port
	hostKey ssh.PublicKey

	mu       sync.Mutex
	accepted []string // fingerprints of the client keys that logged in
}

func newSSHServer(t *testing.T, base string, clientKey ssh.PublicKey) *sshServer {
	t.Helper()
	needGit(t)
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	s := &sshServer{hostKey: hostSigner.PublicKey()}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if string(key.Marshal()) != string(clientKey.Marshal()) {
				return nil, errors.New("unknown client key")
			}
			s.mu.Lock()
			s.accepted = append(s.accepted, ssh.FingerprintSHA256(key))
			s.mu.Unlock()
			return nil, nil
		},
	}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.serve(conn, cfg, base) })
		}
	})
	return s
}

func (s *sshServer) serve(conn net.Conn, cfg *ssh.ServerConfig, base string) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	sconn, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	defer sconn.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, requests, err := nc.Accept()
		if err != nil {
			return
		}
		go session(ch, requests, base)
	}
}

// session runs the one git command a git client asks for ("git-upload-pack
// '/r.git'") on the repository under base.
func session(ch ssh.Channel, requests <-chan *ssh.Request, base string) {
	defer ch.Close()
	for req := range requests {
		if req.Type != "exec" {
			_ = req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			_ = req.Reply(false, nil)
			return
		}
		service, arg, _ := strings.Cut(payload.Command, " ")
		repo := path.Clean("/" + strings.Trim(arg, "'"))
		if service != "git-upload-pack" && service != "git-receive-pack" {
			_ = req.Reply(false, nil)
			return
		}
		_ = req.Reply(true, nil)
		cmd := exec.Command("git", strings.TrimPrefix(service, "git-"), filepath.Join(base, repo))
		cmd.Env = append(os.Environ(), gitEnv...)
		cmd.Stdout = ch
		cmd.Stderr = ch.Stderr()
		stdin, _ := cmd.StdinPipe()
		go func() {
			_, _ = io.Copy(stdin, ch)
			stdin.Close()
		}()
		status := uint32(0)
		if err := cmd.Run(); err != nil {
			status = 1
		}
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
		return
	}
}

// sshKeyFile writes a new ed25519 private key in OpenSSH format, encrypted
// when passphrase is not empty, and returns the file and the public key.
func sshKeyFile(t *testing.T, passphrase string) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test key")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test key", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return file, sshPub
}

// knownHostsFile writes a known_hosts file listing key for addr.
func knownHostsFile(t *testing.T, addr string, key ssh.PublicKey) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	if err := os.WriteFile(file, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestSSH(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	const passphrase = "correct horse battery staple"
	key, pub := sshKeyFile(t, passphrase)
	srv := newSSHServer(t, base, pub)
	url := "ssh://git@" + srv.addr + "/r.git"
	known := knownHostsFile(t, srv.addr, srv.hostKey)
	ctx := testContext(t, time.Minute)

	// The right host key and client key: sync and commit.
	r, err := Open(ctx, Options{URL: url, Auth: Auth{SSHKeyFile: key, SSHKeyPassphrase: passphrase, KnownHostsFile: known}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files) != 2 {
		t.Errorf("Sync over ssh: files %v", paths(s.Files))
	}
	h, err := r.Commit(ctx, CommitRequest{Message: "status over ssh", Author: daemon, Changes: writeStatus("phase: ssh\n")})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, dir, "rev-parse", "main"); got != string(h) {
		t.Errorf("main = %s, want %s", got, h)
	}
	srv.mu.Lock()
	if len(srv.accepted) == 0 || srv.accepted[0] != ssh.FingerprintSHA256(pub) {
		t.Errorf("server accepted keys %v, want %s", srv.accepted, ssh.FingerprintSHA256(pub))
	}
	srv.mu.Unlock()

	// The default known_hosts files (here $SSH_KNOWN_HOSTS) when none is
	// given.
	t.Setenv("SSH_KNOWN_HOSTS", known)
	if _, err := Open(ctx, Options{URL: url, Auth: Auth{SSHKeyFile: key, SSHKeyPassphrase: passphrase}}); err != nil {
		t.Errorf("Open with $SSH_KNOWN_HOSTS: %v", err)
	}

	_, otherPub := sshKeyFile(t, "")
	wrongKey, _ := sshKeyFile(t, "")
	for name, tc := range map[string]struct {
		auth Auth
		want string
	}{
		"changed host key": {
			Auth{SSHKeyFile: key, SSHKeyPassphrase: passphrase, KnownHostsFile: knownHostsFile(t, srv.addr, otherPub)},
			"knownhosts: key mismatch",
		},
		"unknown host": {
			Auth{SSHKeyFile: key, SSHKeyPassphrase: passphrase, KnownHostsFile: knownHostsFile(t, "127.0.0.2:22", srv.hostKey)},
			"knownhosts: key is unknown",
		},
		"key the server does not accept": {
			Auth{SSHKeyFile: wrongKey, KnownHostsFile: known},
			"unable to authenticate",
		},
	} {
		_, err := Open(ctx, Options{URL: url, Auth: tc.auth})
		if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrAuth with %q", name, err, tc.want)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}

	// Problems found before connecting.
	for name, a := range map[string]Auth{
		"no passphrase":         {SSHKeyFile: key, KnownHostsFile: known},
		"wrong passphrase":      {SSHKeyFile: key, SSHKeyPassphrase: "Tr0ub4dor&3", KnownHostsFile: known},
		"missing known_hosts":   {SSHKeyFile: key, SSHKeyPassphrase: passphrase, KnownHostsFile: known + ".missing"},
		"missing key":           {SSHKeyFile: key + ".missing", KnownHostsFile: known},
		"not a key":             {SSHKeyFile: known, KnownHostsFile: known},
		"token file for ssh":    {SSHKeyFile: key, KnownHostsFile: known, TokenFile: known},
		"no key (agent unused)": {KnownHostsFile: known},
	} {
		_, err := Open(ctx, Options{URL: url, Auth: a})
		if err == nil {
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if strings.Contains(err.Error(), "Tr0ub4dor") || strings.Contains(err.Error(), "horse") {
			t.Errorf("%s: the error shows the passphrase: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestHostKeyCheck checks the host key callback Repo builds, without a
// server: only the key listed for the host and port passes.
func TestHostKeyCheck(t *testing.T) {
	_, hostKey := sshKeyFile(t, "")
	_, otherKey := sshKeyFile(t, "")
	known := knownHostsFile(t, "git.example.com:2222", hostKey)
	check, algorithms, err := hostKeyCheck(known, "git.example.com:2222")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(algorithms) != "[ssh-ed25519]" {
		t.Errorf("host key algorithms %v, want [ssh-ed25519]", algorithms)
	}
	addr := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 2222}
	for _, tc := range []struct {
		host string
		key  ssh.PublicKey
		want string // "" for accepted
	}{
		{"git.example.com:2222", hostKey, ""},
		{"git.example.com:2222", otherKey, "knownhosts: key mismatch"},
		{"git.example.com:22", hostKey, "knownhosts: key is unknown"},
		{"evil.example.com:2222", hostKey, "knownhosts: key is unknown"},
	} {
		err := check(tc.host, addr, tc.key)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tc.host, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s with %s: %v, want %q", tc.host, ssh.FingerprintSHA256(tc.key), err, tc.want)
		case tc.want != "" && !errors.Is(classify(err), ErrAuth):
			t.Errorf("%s: %v is not classified as ErrAuth", tc.host, err)
		}
	}
}
