package gitops

import (
	"os/exec"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
)

var (
	fileTransport sync.Once
	// inProcessFile is set once file:// is served in process.
	inProcessFile atomic.Bool
)

// useInProcessFileTransport makes file:// URLs and local paths work where
// no git binary is installed, as in the daemon's FROM scratch image:
// go-git's own file transport runs git-upload-pack and git-receive-pack,
// and its in-process server speaks the same protocol without them. It
// cannot shorten histories, so such clones hold the whole history: fine
// for a repository on a local disk, which is what file:// is.
func useInProcessFileTransport() {
	fileTransport.Do(func() {
		if _, err := exec.LookPath("git-upload-pack"); err == nil {
			return
		}
		if _, err := exec.LookPath("git"); err == nil {
			return
		}
		client.InstallProtocol("file", server.DefaultServer)
		inProcessFile.Store(true)
	})
}
