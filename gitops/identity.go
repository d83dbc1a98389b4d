package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/go-git/gcfg"
)

// Identity is who a commit is by, as git would name them: the author and
// the committer. A field git would not find stays empty.
type Identity struct {
	Author    Signature
	Committer Signature
}

// Identity returns the identity git would give a commit made here, without
// the names git guesses from the host when none is configured. Like git it
// reads, the later winning:
//
//   - the system configuration ($GIT_CONFIG_SYSTEM, else /etc/gitconfig;
//     none with $GIT_CONFIG_NOSYSTEM);
//   - the global configuration ($GIT_CONFIG_GLOBAL, else
//     $XDG_CONFIG_HOME/git/config, or ~/.config/git/config, then
//     ~/.gitconfig), following include.path;
//   - for a local clone, the repository's configuration;
//   - the pairs of $GIT_CONFIG_COUNT, $GIT_CONFIG_KEY_n, $GIT_CONFIG_VALUE_n;
//
// in which author.name and author.email, and committer.name and
// committer.email, beat user.name and user.email; then $GIT_AUTHOR_NAME,
// $GIT_AUTHOR_EMAIL, $GIT_COMMITTER_NAME and $GIT_COMMITTER_EMAIL beat the
// configuration (an empty one counts as unset), and $EMAIL is the email
// when nothing else names one.
// Conditional includes (includeIf) are not followed: outside a repository,
// as for a URL, git follows none of them either.
//
// An error means a configuration file could not be read or parsed, as git
// would refuse to commit then too.
func (b *Branch) Identity() (Identity, error) {
	return identity(b.repoConfig)
}

// repoConfig returns the identity settings of a local clone's own
// configuration, as "section.key" in lower case; none for a URL.
func (b *Branch) repoConfig() (map[string]string, error) {
	if b.local == nil {
		return nil, nil
	}
	cfg, err := b.local.repo.Storer.Config()
	if err != nil {
		return nil, fmt.Errorf("read the configuration of %s: %w", b.local.root, err)
	}
	out := map[string]string{}
	if cfg.Raw == nil {
		return out, nil
	}
	for _, section := range []string{"user", "author", "committer"} {
		s := cfg.Raw.Section(section)
		for _, key := range []string{"name", "email"} {
			if s.HasOption(key) {
				out[section+"."+key] = s.Option(key)
			}
		}
	}
	return out, nil
}

// maxIncludeDepth is how deep include.path may nest, as in git.
const maxIncludeDepth = 10

// identity reads the configuration and the environment as Identity says;
// repo, when it returns settings, gives the repository's own.
func identity(repo func() (map[string]string, error)) (Identity, error) {
	set := map[string]string{}
	var files []string
	if !envTrue("GIT_CONFIG_NOSYSTEM") {
		if f, ok := os.LookupEnv("GIT_CONFIG_SYSTEM"); ok {
			files = append(files, f)
		} else {
			files = append(files, "/etc/gitconfig")
		}
	}
	if f, ok := os.LookupEnv("GIT_CONFIG_GLOBAL"); ok {
		files = append(files, f)
	} else {
		home, _ := os.UserHomeDir()
		if xdg := os.Getenv("XDG_CONFIG_HOME"); xdg != "" {
			files = append(files, filepath.Join(xdg, "git", "config"))
		} else if home != "" {
			files = append(files, filepath.Join(home, ".config", "git", "config"))
		}
		if home != "" {
			files = append(files, filepath.Join(home, ".gitconfig"))
		}
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		if err := readConfig(f, set, 0); err != nil {
			return Identity{}, err
		}
	}
	if repo != nil {
		own, err := repo()
		if err != nil {
			return Identity{}, err
		}
		for k, v := range own {
			set[k] = v
		}
	}
	if err := envConfig(set); err != nil {
		return Identity{}, err
	}

	pick := func(env, section, key string) string {
		if v := os.Getenv(env); v != "" {
			return v
		}
		if v, ok := set[section+"."+key]; ok {
			return v
		}
		if v, ok := set["user."+key]; ok {
			return v
		}
		if key == "email" {
			return os.Getenv("EMAIL")
		}
		return ""
	}
	return Identity{
		Author:    Signature{Name: pick("GIT_AUTHOR_NAME", "author", "name"), Email: pick("GIT_AUTHOR_EMAIL", "author", "email")},
		Committer: Signature{Name: pick("GIT_COMMITTER_NAME", "committer", "name"), Email: pick("GIT_COMMITTER_EMAIL", "committer", "email")},
	}, nil
}

// readConfig reads a git configuration file into set, keeping the identity
// settings ("user.name", ...) and following include.path where it stands.
// A file that does not exist is skipped, as git skips it.
func readConfig(file string, set map[string]string, depth int) error {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read git configuration: %w", err)
	}
	err = gcfg.ReadWithCallback(bytes.NewReader(data), func(section, subsection, key, value string, blank bool) error {
		section, key = strings.ToLower(section), strings.ToLower(key)
		if subsection != "" || key == "" || blank {
			return nil
		}
		switch section + "." + key {
		case "user.name", "user.email", "author.name", "author.email", "committer.name", "committer.email":
			set[section+"."+key] = value
		case "include.path":
			if depth >= maxIncludeDepth {
				return fmt.Errorf("include.path nested more than %d deep", maxIncludeDepth)
			}
			return readConfig(includePath(file, value), set, depth+1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("git configuration %s: %w", file, err)
	}
	return nil
}

// includePath resolves an include.path as git does: ~/ is the home
// directory, and a relative path is relative to the including file.
func includePath(from, path string) string {
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	if !filepath.IsAbs(path) {
		return filepath.Join(filepath.Dir(from), path)
	}
	return path
}

// envConfig applies the configuration given in the environment as
// GIT_CONFIG_COUNT pairs of GIT_CONFIG_KEY_n and GIT_CONFIG_VALUE_n.
func envConfig(set map[string]string) error {
	count, ok := os.LookupEnv("GIT_CONFIG_COUNT")
	if !ok || count == "" {
		return nil
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 {
		return fmt.Errorf("GIT_CONFIG_COUNT: %q is not a count", count)
	}
	for i := range n {
		key, ok := os.LookupEnv("GIT_CONFIG_KEY_" + strconv.Itoa(i))
		if !ok {
			return fmt.Errorf("GIT_CONFIG_KEY_%d is missing", i)
		}
		value, ok := os.LookupEnv("GIT_CONFIG_VALUE_" + strconv.Itoa(i))
		if !ok {
			return fmt.Errorf("GIT_CONFIG_VALUE_%d is missing", i)
		}
		switch k := strings.ToLower(key); k {
		case "user.name", "user.email", "author.name", "author.email", "committer.name", "committer.email":
			set[k] = value
		}
	}
	return nil
}

// envTrue reports whether a boolean environment variable is set to true,
// as git reads booleans.
func envTrue(name string) bool {
	switch strings.ToLower(os.Getenv(name)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}
