package gitops

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// identityEnv are the variables Identity reads; each case of TestIdentity
// starts with all of them unset but HOME.
var identityEnv = []string{
	"GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_GLOBAL", "XDG_CONFIG_HOME",
	"GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0",
	"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL",
}

// TestIdentity checks that a commit to a URL and one in a local clone are
// by whom git would make them by, and compares each answer with git's own
// (git var GIT_AUTHOR_IDENT, GIT_COMMITTER_IDENT) where git names both.
func TestIdentity(t *testing.T) {
	needGit(t)
	origin := bare(t, t.TempDir(), "origin.git", shopFiles)
	clone := newLocal(t, shopFiles)
	run(t, clone, "config", "user.name", "Clone")
	run(t, clone, "config", "user.email", "clone@example.com")

	tests := []struct {
		name  string
		files map[string]string // under HOME; "system" is the system file
		env   map[string]string
		local bool
		want  Identity
	}{{
		name: "nothing configured",
		env:  map[string]string{"GIT_CONFIG_NOSYSTEM": "1"},
	}, {
		name:  "~/.gitconfig",
		files: map[string]string{".gitconfig": "[user]\n\tname = Grace Hopper\n\temail = grace@example.com\n"},
		env:   map[string]string{"GIT_CONFIG_NOSYSTEM": "1"},
		want:  both("Grace Hopper", "grace@example.com"),
	}, {
		name: "~/.gitconfig beats the XDG file, which fills in",
		files: map[string]string{
			".config/git/config": "[user]\n\tname = Xdg\n\temail = xdg@example.com\n",
			".gitconfig":         "[user]\n\tname = Home\n",
		},
		env:  map[string]string{"GIT_CONFIG_NOSYSTEM": "1"},
		want: both("Home", "xdg@example.com"),
	}, {
		name: "$XDG_CONFIG_HOME",
		files: map[string]string{
			"xdg/git/config":     "[user]\n\tname = Xdg\n\temail = xdg@example.com\n",
			".config/git/config": "[user]\n\tname = Ignored\n\temail = ignored@example.com\n",
		},
		env:  map[string]string{"GIT_CONFIG_NOSYSTEM": "1", "XDG_CONFIG_HOME": "{home}/xdg"},
		want: both("Xdg", "xdg@example.com"),
	}, {
		name: "the system file, below the global one",
		files: map[string]string{
			"system":     "[user]\n\tname = System\n\temail = system@example.com\n",
			".gitconfig": "[user]\n\tname = Global\n",
		},
		env:  map[string]string{"GIT_CONFIG_SYSTEM": "{home}/system"},
		want: both("Global", "system@example.com"),
	}, {
		name:  "$GIT_CONFIG_NOSYSTEM",
		files: map[string]string{"system": "[user]\n\tname = System\n\temail = system@example.com\n"},
		env:   map[string]string{"GIT_CONFIG_SYSTEM": "{home}/system", "GIT_CONFIG_NOSYSTEM": "true"},
	}, {
		name: "$GIT_CONFIG_GLOBAL replaces the global files",
		files: map[string]string{
			"elsewhere":  "[user]\n\tname = Elsewhere\n\temail = elsewhere@example.com\n",
			".gitconfig": "[user]\n\tname = Ignored\n",
		},
		env:  map[string]string{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "{home}/elsewhere"},
		want: both("Elsewhere", "elsewhere@example.com"),
	}, {
		name: "include.path where it stands, relative and from ~",
		files: map[string]string{
			".gitconfig":    "[user]\n\tname = Before\n[include]\n\tpath = conf/identity\n[user]\n\temail = after@example.com\n",
			"conf/identity": "[user]\n\tname = Included\n\temail = included@example.com\n[include]\n\tpath = ~/conf/more\n",
			"conf/more":     "[committer]\n\tname = More\n",
		},
		env: map[string]string{"GIT_CONFIG_NOSYSTEM": "1"},
		want: Identity{Author: Signature{"Included", "after@example.com"},
			Committer: Signature{"More", "after@example.com"}},
	}, {
		name:  "includeIf is not followed outside a repository",
		files: map[string]string{".gitconfig": "[user]\n\tname = Plain\n\temail = plain@example.com\n[includeIf \"gitdir:/\"]\n\tpath = other\n", "other": "[user]\n\tname = Other\n"},
		env:   map[string]string{"GIT_CONFIG_NOSYSTEM": "1"},
		want:  both("Plain", "plain@example.com"),
	}, {
		name:  "author.* and committer.* beat user.*",
		files: map[string]string{".gitconfig": "[user]\n\tname = User\n\temail = user@example.com\n[author]\n\tname = Author\n[committer]\n\temail = committer@example.com\n"},
		env:   map[string]string{"GIT_CONFIG_NOSYSTEM": "1"},
		want: Identity{Author: Signature{"Author", "user@example.com"},
			Committer: Signature{"User", "committer@example.com"}},
	}, {
		name:  "the environment beats the configuration",
		files: map[string]string{".gitconfig": "[user]\n\tname = User\n\temail = user@example.com\n"},
		env: map[string]string{"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Env Author", "GIT_AUTHOR_EMAIL": "author@example.com",
			"GIT_COMMITTER_NAME": "Env Committer"},
		want: Identity{Author: Signature{"Env Author", "author@example.com"},
			Committer: Signature{"Env Committer", "user@example.com"}},
	}, {
		name:  "GIT_CONFIG_COUNT pairs beat the files",
		files: map[string]string{".gitconfig": "[user]\n\tname = User\n\temail = user@example.com\n"},
		env:   map[string]string{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "Pair"},
		want:  both("Pair", "user@example.com"),
	}, {
		name:  "$EMAIL when nothing names an email",
		files: map[string]string{".gitconfig": "[user]\n\tname = User\n"},
		env:   map[string]string{"GIT_CONFIG_NOSYSTEM": "1", "EMAIL": "mail@example.com"},
		want:  both("User", "mail@example.com"),
	}, {
		name:  "a local clone's own configuration beats the global one",
		files: map[string]string{".gitconfig": "[user]\n\tname = Global\n\temail = global@example.com\n[committer]\n\tname = Global Committer\n"},
		env:   map[string]string{"GIT_CONFIG_NOSYSTEM": "1"},
		local: true,
		want: Identity{Author: Signature{"Clone", "clone@example.com"},
			Committer: Signature{"Global Committer", "clone@example.com"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			for _, name := range identityEnv {
				t.Setenv(name, "")
				os.Unsetenv(name)
			}
			t.Setenv("HOME", home)
			for name, content := range tt.files {
				writeFile(t, filepath.Join(home, name), content)
			}
			for name, v := range tt.env {
				t.Setenv(name, strings.ReplaceAll(v, "{home}", home))
			}
			repo := origin
			if tt.local {
				repo = clone
			}
			got, err := openBranch(t, BranchOptions{Repo: repo}).Identity()
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("identity = %+v, want %+v", got, tt.want)
			}
			// git itself, where it names everyone without guessing.
			if complete(tt.want.Author) && complete(tt.want.Committer) {
				dir := home
				if tt.local {
					dir = clone
				}
				for _, v := range []struct {
					name string
					want Signature
				}{{"GIT_AUTHOR_IDENT", tt.want.Author}, {"GIT_COMMITTER_IDENT", tt.want.Committer}} {
					cmd := exec.Command("git", "-C", dir, "var", v.name)
					out, err := cmd.CombinedOutput()
					if err != nil {
						t.Fatalf("git var %s: %v\n%s", v.name, err, out)
					}
					if want := v.want.Name + " <" + v.want.Email + ">"; !strings.HasPrefix(string(out), want+" ") {
						t.Errorf("git var %s = %q, want it to start with %q", v.name, out, want)
					}
				}
			}
		})
	}
}

func both(name, email string) Identity {
	return Identity{Author: Signature{name, email}, Committer: Signature{name, email}}
}

func complete(s Signature) bool { return s.Name != "" && s.Email != "" }

// TestIdentityBrokenConfig checks that a configuration file git would not
// read is an error naming it, not a silent fallback.
func TestIdentityBrokenConfig(t *testing.T) {
	needGit(t)
	origin := bare(t, t.TempDir(), "origin.git", shopFiles)
	global := filepath.Join(t.TempDir(), "gitconfig")
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", global)
	// Opened first: the file transport runs git, which reads the file too.
	b := openBranch(t, BranchOptions{Repo: origin})
	writeFile(t, global, "[user\n\tname = Broken\n")
	_, err := b.Identity()
	if err == nil || !strings.Contains(err.Error(), global) {
		t.Errorf("err = %v, want one naming %s", err, global)
	}
	// An include that includes itself.
	writeFile(t, global, "[include]\n\tpath = gitconfig\n")
	if _, err := b.Identity(); err == nil || !strings.Contains(err.Error(), "nested more than 10 deep") {
		t.Errorf("err = %v, want the include loop refused", err)
	}
}
