package broker

import (
	"encoding/base64"
	"sync/atomic"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Verifier authenticates the clients of a device's embedded server (it is the server's
// CustomClientAuthentication): a client proves it holds either one of the local nkeys
// (the worker's own in-process connection, the root-only admin key in the state dir) or
// a user JWT issued by one of the trusted fleet accounts, by signing the server's nonce.
// Anonymous clients, bearer tokens, passwords and expired or foreign JWTs are refused.
type Verifier struct {
	// Local maps a user nkey (U...) to its permissions (nil: everything).
	Local map[string]*server.Permissions
	// Accounts are trusted fleet account public keys (A...).
	Accounts []string
	// Refused counts refused connections.
	Refused atomic.Int64
}

// NewVerifier trusts the fleet accounts and the local user keys (with every permission).
func NewVerifier(accounts []string, local ...string) *Verifier {
	v := &Verifier{Accounts: accounts, Local: map[string]*server.Permissions{}}
	for _, pub := range local {
		v.Local[pub] = nil
	}
	return v
}

// Check implements server.Authentication.
func (v *Verifier) Check(c server.ClientAuthentication) bool {
	ok, user := v.check(c.GetOpts(), c.GetNonce())
	if !ok {
		v.Refused.Add(1)
		return false
	}
	c.RegisterUser(user)
	return true
}

func (v *Verifier) check(o *server.ClientOpts, nonce []byte) (bool, *server.User) {
	if o == nil || len(nonce) == 0 {
		return false, nil
	}
	sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
	if err != nil {
		if sig, err = base64.StdEncoding.DecodeString(o.Sig); err != nil {
			return false, nil
		}
	}
	if o.JWT != "" {
		uc, err := jwt.DecodeUserClaims(o.JWT) // checks the issuer's signature on the JWT
		if err != nil || !v.trusted(uc.Issuer) || (uc.IssuerAccount != "" && uc.IssuerAccount != uc.Issuer) {
			return false, nil
		}
		var vr jwt.ValidationResults
		uc.Validate(&vr) // expiry, not-before, well-formed permissions
		if vr.IsBlocking(true) {
			return false, nil
		}
		if !verifyNonce(uc.Subject, nonce, sig) {
			return false, nil
		}
		return true, &server.User{Username: uc.Subject, Permissions: permissions(uc.Permissions)}
	}
	perms, ok := v.Local[o.Nkey]
	if o.Nkey == "" || !ok || !verifyNonce(o.Nkey, nonce, sig) {
		return false, nil
	}
	return true, &server.User{Username: o.Nkey, Permissions: perms}
}

func (v *Verifier) trusted(issuer string) bool {
	for _, a := range v.Accounts {
		if a == issuer {
			return true
		}
	}
	return false
}

func verifyNonce(userKey string, nonce, sig []byte) bool {
	if !nkeys.IsValidPublicUserKey(userKey) {
		return false
	}
	pub, err := nkeys.FromPublicKey(userKey)
	return err == nil && pub.Verify(nonce, sig) == nil
}

// permissions converts a user JWT's permissions to the server's.
func permissions(p jwt.Permissions) *server.Permissions {
	out := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Pub.Allow, Deny: p.Pub.Deny},
		Subscribe: &server.SubjectPermission{Allow: p.Sub.Allow, Deny: p.Sub.Deny},
	}
	if p.Resp != nil {
		out.Response = &server.ResponsePermission{MaxMsgs: p.Resp.MaxMsgs, Expires: p.Resp.Expires}
	}
	return out
}
