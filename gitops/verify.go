package gitops

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// readKeyRing checks an armored OpenPGP key ring, so that a broken
// Options.TrustedKeys is reported by Open rather than as a bad signature
// on every commit.
func readKeyRing(armored string) error {
	ring, err := readRing(armored)
	if err != nil {
		return fmt.Errorf("read trusted keys: %w", err)
	}
	if len(ring) == 0 {
		return errors.New("read trusted keys: no keys")
	}
	return nil
}

// readRing reads every key of armored, which may hold several armored
// blocks one after the other (keys exported one by one and put in one
// file): openpgp.ReadArmoredKeyRing reads only the first.
func readRing(armored string) (openpgp.EntityList, error) {
	const begin = "-----BEGIN PGP "
	var ring openpgp.EntityList
	rest := armored
	for {
		i := strings.Index(rest, begin)
		if i < 0 {
			break
		}
		rest = rest[i:]
		j := strings.Index(rest[len(begin):], begin)
		block := rest
		if j >= 0 {
			block, rest = rest[:len(begin)+j], rest[len(begin)+j:]
		} else {
			rest = ""
		}
		keys, err := openpgp.ReadArmoredKeyRing(strings.NewReader(block))
		if err != nil {
			return nil, err
		}
		ring = append(ring, keys...)
	}
	if len(ring) == 0 {
		// Not armored at all: let the reader say what is wrong.
		return openpgp.ReadArmoredKeyRing(strings.NewReader(armored))
	}
	return ring, nil
}

// verify checks c's signature against the armored key ring. It returns the
// signer ("key id user id") when the signature is good and made by a key of
// the ring, otherwise a short problem: "unsigned", "signed by unknown key
// ID", or "bad signature". An unsigned commit is data, not an error.
func verify(c *object.Commit, armored string) (signer, problem string) {
	if strings.TrimSpace(c.PGPSignature) == "" {
		return "", "unsigned"
	}
	if strings.Count(c.PGPSignature, "-----BEGIN PGP SIGNATURE-----") > 1 {
		return "", "bad signature: more than one signature"
	}
	ring, err := readRing(armored)
	if err != nil {
		return "", "bad signature"
	}
	body := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(body); err != nil {
		return "", "bad signature"
	}
	br, err := body.Reader()
	if err != nil {
		return "", "bad signature"
	}
	entity, err := openpgp.CheckArmoredDetachedSignature(ring, br, strings.NewReader(c.PGPSignature), nil)
	if err == nil {
		signer = strings.ToUpper(entity.PrimaryKey.KeyIdString())
		if id := entity.PrimaryIdentity(); id != nil {
			signer += " " + id.Name
		}
		return signer, ""
	}
	if errors.Is(err, pgperrors.ErrUnknownIssuer) {
		if id := issuer(c.PGPSignature); id != "" {
			return "", "signed by unknown key " + id
		}
		return "", "signed by unknown key"
	}
	return "", "bad signature"
}

// issuer reads the key id a detached armored signature names, or "".
func issuer(armored string) string {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return ""
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return ""
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		return ""
	}
	if sig.IssuerFingerprint != nil {
		return fmt.Sprintf("%X", sig.IssuerFingerprint)
	}
	if sig.IssuerKeyId != nil {
		return fmt.Sprintf("%016X", *sig.IssuerKeyId)
	}
	return ""
}
