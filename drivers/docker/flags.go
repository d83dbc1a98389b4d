package docker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/hal9ai/hal9-migrate/drivers/flagd"
	"github.com/hal9ai/hal9-migrate/internal/atomicfile"
)

// writeFlags writes flags as a flagd flag-definition file, ending with a
// newline as a text file does.
func writeFlags(path string, flags map[string]int) error {
	b, err := flagd.Render(flags)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readFlags reads the flags file; none written yet is no flags. A flag
// that does not read as a boolean rollout fails the whole read.
func readFlags(path string) (map[string]int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the flags: %w", err)
	}
	flags, err := flagd.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("read the flags %s: %w", path, err)
	}
	return flags, nil
}
