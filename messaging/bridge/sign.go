package bridge

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"

	"github.com/fleetprov/fleetprov/core/auth"
)

// Headers of a signed HTTP request.
const (
	NonceHeader     = "X-Fleetprov-Nonce"
	SignatureHeader = "X-Fleetprov-Signature"
)

// SigningMessage is what a signed HTTP request's SSHSIG covers (namespace
// fleetprov-http-v1): method, path, nonce and the body's sha256, each line ending in \n.
func SigningMessage(method, path, nonce string, body []byte) []byte {
	return signingMessage(method, path, nonce, sha256.Sum256(body))
}

func signingMessage(method, path, nonce string, sum [32]byte) []byte {
	return fmt.Appendf(nil, "fleetprov-http-v1\nmethod:%s\npath:%s\nnonce:%s\nsha256:%x\n", method, path, nonce, sum)
}

// SignRequest signs a request for the bridge: it is what `publisher --via` and the tests
// use. The nonce comes from GET /api/nonce.
func SignRequest(req *http.Request, body []byte, nonce string, sign func([]byte) ([]byte, error)) error {
	sig, err := sign(SigningMessage(req.Method, req.URL.Path, nonce, body))
	if err != nil {
		return err
	}
	req.Header.Set(NonceHeader, nonce)
	req.Header.Set(SignatureHeader, base64.StdEncoding.EncodeToString(sig))
	return nil
}

// clientAddr is the nonce owner of a request: its address, or its /64 for IPv6.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return auth.ClientKey(r.RemoteAddr)
	}
	return auth.ClientKey(host)
}

// hasSignature reports whether the request carries signature headers at all.
func hasSignature(r *http.Request) bool {
	return r.Header.Get(NonceHeader) != "" || r.Header.Get(SignatureHeader) != ""
}

// signed is a signed request whose nonce was consumed: the body is not read yet.
type signed struct {
	nonce string
	sig   []byte
}

// takeNonce checks a signed request's headers before its body is read: both present, the
// nonce this client's and unused (it is consumed whatever follows: single use), the
// signature base64. A request without them costs nothing more.
func (s *Server) takeNonce(r *http.Request) (signed, error) {
	nonce, sig64 := r.Header.Get(NonceHeader), r.Header.Get(SignatureHeader)
	if nonce == "" || sig64 == "" {
		return signed{}, fmt.Errorf("%w: send %s and %s", auth.ErrMissingSignature, NonceHeader, SignatureHeader)
	}
	if err := s.o.Nonces.Consume(nonce, clientAddr(r)); err != nil {
		return signed{}, err
	}
	sig, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil {
		return signed{}, fmt.Errorf("%w: signature header is not base64", auth.ErrBadSignature)
	}
	return signed{nonce: nonce, sig: sig}, nil
}

// authorize checks the signature over method, path, nonce and the body's sha256 for op,
// and returns the decision with the check to run again at job start.
func (s *Server) authorize(r *http.Request, sg signed, sum [32]byte, op string) (auth.Decision, func() error, error) {
	msg := signingMessage(r.Method, r.URL.Path, sg.nonce, sum)
	dec, err := s.o.Service.Authorize(msg, sg.sig, auth.NamespaceHTTP, op)
	if err != nil {
		return auth.Decision{}, nil, err
	}
	// At job start, under the device lock, the signer must still be trusted.
	recheck := func() error {
		_, err := s.o.Service.Authorize(msg, sg.sig, auth.NamespaceHTTP, op)
		return err
	}
	return dec, recheck, nil
}

// verify checks a signed request without a body (current, export).
func (s *Server) verify(r *http.Request, op string) error {
	sg, err := s.takeNonce(r)
	if err != nil {
		return err
	}
	_, _, err = s.authorize(r, sg, sha256.Sum256(nil), op)
	return err
}
