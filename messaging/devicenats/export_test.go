package devicenats_test

import (
	"encoding/base64"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
)

func authSign(raw []byte, s ssh.Signer, ns string) (string, error) {
	b, err := auth.Sign(raw, s, ns)
	return base64.StdEncoding.EncodeToString(b), err
}
