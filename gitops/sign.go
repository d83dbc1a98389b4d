package gitops

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// readSigningKey reads the armored OpenPGP private key Options.SigningKey
// holds: one entity, with its private key not locked by a passphrase (the
// daemon signs unattended). With a trusted ring, the key must be in it: a
// daemon whose own commits its gate would refuse is a configuration error,
// said at start.
func readSigningKey(armored, trusted string) (*openpgp.Entity, error) {
	ring, err := readRing(armored)
	if err != nil {
		return nil, fmt.Errorf("read the signing key: %w", err)
	}
	if len(ring) != 1 {
		return nil, fmt.Errorf("read the signing key: want one key, found %d", len(ring))
	}
	e := ring[0]
	if e.PrivateKey == nil {
		return nil, errors.New("read the signing key: it holds no private key (expected the armored output of gpg --export-secret-keys)")
	}
	if e.PrivateKey.Encrypted {
		return nil, errors.New("read the signing key: its private key is locked by a passphrase (expected a key without one, kept in a secret)")
	}
	if trusted != "" {
		tr, err := readRing(trusted)
		if err != nil {
			return nil, fmt.Errorf("read trusted keys: %w", err)
		}
		found := false
		for _, t := range tr {
			found = found || bytes.Equal(t.PrimaryKey.Fingerprint, e.PrimaryKey.Fingerprint)
		}
		if !found {
			return nil, fmt.Errorf("the signing key %X is not among the trusted keys: the daemon's own commits would not pass its signature gate (add its public key to the trusted keys)", e.PrimaryKey.Fingerprint)
		}
	}
	return e, nil
}

// signCommit sets c's signature, made by key over the commit without it.
func signCommit(c *object.Commit, key *openpgp.Entity) error {
	if key == nil {
		return nil
	}
	unsigned := &object.Commit{}
	*unsigned = *c
	obj := &plumbing.MemoryObject{}
	if err := unsigned.EncodeWithoutSignature(obj); err != nil {
		return err
	}
	r, err := obj.Reader()
	if err != nil {
		return err
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, key, r, nil); err != nil {
		return fmt.Errorf("sign the commit: %w", err)
	}
	c.PGPSignature = sig.String()
	return nil
}

// Signs reports whether the Repo signs the commits it makes
// (Options.SigningKey).
func (r *Repo) Signs() bool { return r.signKey != nil }
