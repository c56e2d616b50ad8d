package bridge

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
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
	sum := sha256.Sum256(body)
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

// verify checks a signed request for op: the nonce is consumed first (single use, even
// when the signature then fails), then the signature over method, path, nonce and body.
func (s *Server) verify(r *http.Request, body []byte, op string) (auth.Decision, error) {
	nonce, sig64 := r.Header.Get(NonceHeader), r.Header.Get(SignatureHeader)
	if nonce == "" || sig64 == "" {
		s.reject("unauthorized")
		return auth.Decision{}, fmt.Errorf("%w: send %s and %s", auth.ErrMissingSignature, NonceHeader, SignatureHeader)
	}
	if err := s.o.Nonces.Consume(nonce, clientAddr(r)); err != nil {
		s.reject("unauthorized")
		return auth.Decision{}, err
	}
	sig, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil {
		s.reject("unauthorized")
		return auth.Decision{}, fmt.Errorf("%w: signature header is not base64", auth.ErrBadSignature)
	}
	msg := SigningMessage(r.Method, r.URL.Path, nonce, body)
	dec, err := s.o.Service.Authorize(msg, sig, auth.NamespaceHTTP, op)
	if err != nil {
		s.reject("unauthorized")
		return auth.Decision{}, err
	}
	return dec, nil
}

// recheck is a signed request's authorization again at job start, under the device lock:
// its signer must still be trusted by the state as it is now.
func (s *Server) recheck(r *http.Request, body []byte, op string) func() error {
	msg := SigningMessage(r.Method, r.URL.Path, r.Header.Get(NonceHeader), body)
	sig, _ := base64.StdEncoding.DecodeString(r.Header.Get(SignatureHeader))
	return func() error {
		_, err := s.o.Service.Authorize(msg, sig, auth.NamespaceHTTP, op)
		return err
	}
}

// readBody reads the whole body within the upload limit (413 past it).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBody)
	return io.ReadAll(r.Body)
}
