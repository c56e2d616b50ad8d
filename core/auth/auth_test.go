package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/internal/fptest"
)

// sshKeygen returns the ssh-keygen path; under CI=true it must exist.
func sshKeygen(t *testing.T) string {
	t.Helper()
	return fptest.RequireTool(t, "openssh-client", "ssh-keygen")
}

// genKey makes a key with ssh-keygen and returns the private key path, the signer and
// the authorized_keys line.
func genKey(t *testing.T, typ string, bits string) (string, ssh.Signer, string) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "id")
	args := []string{"-q", "-t", typ, "-N", "", "-C", "test@" + typ, "-f", p}
	if bits != "" {
		args = append(args, "-b", bits)
	}
	if out, err := exec.Command(sshKeygen(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	raw, _ := os.ReadFile(p)
	signer, err := ssh.ParsePrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(p + ".pub")
	return p, signer, strings.TrimSpace(string(pub))
}

var keyTypes = []struct{ name, typ, bits string }{
	{"ed25519", "ed25519", ""},
	{"ecdsa_p256", "ecdsa", "256"},
	{"ecdsa_p384", "ecdsa", "384"},
	{"ecdsa_p521", "ecdsa", "521"},
	{"rsa_sha2_512", "rsa", "2048"},
}

func TestInteropWithSSHKeygen(t *testing.T) {
	msg := []byte("{\"v\":1,\"id\":\"x\"}\n")
	for _, kt := range keyTypes {
		t.Run(kt.name, func(t *testing.T) {
			keyPath, signer, pubLine := genKey(t, kt.typ, kt.bits)
			dir := t.TempDir()
			allowed := filepath.Join(dir, "allowed_signers")
			os.WriteFile(allowed, []byte("admin "+pubLine+"\n"), 0o600)
			signers, err := ParseAllowedSigners([]byte("admin " + pubLine + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			// ssh-keygen signs, we verify.
			msgPath := filepath.Join(dir, "msg")
			os.WriteFile(msgPath, msg, 0o600)
			if out, err := exec.Command(sshKeygen(t), "-Y", "sign", "-f", keyPath, "-n", NamespaceEnvelope, msgPath).CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
			}
			theirs, _ := os.ReadFile(msgPath + ".sig")
			p, err := signers.Verify(msg, theirs, NamespaceEnvelope, time.Now())
			if err != nil || p != "admin" {
				t.Fatalf("Verify(ssh-keygen signature) = %q, %v", p, err)
			}
			if _, err := signers.Verify(append(msg, 'x'), theirs, NamespaceEnvelope, time.Now()); !errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify(tampered) = %v; want ErrBadSignature", err)
			}
			if _, err := signers.Verify(msg, theirs, NamespaceHTTP, time.Now()); !errors.Is(err, ErrNamespace) {
				t.Errorf("Verify(other namespace) = %v; want ErrNamespace", err)
			}
			// We sign, ssh-keygen verifies.
			ours, err := Sign(msg, signer, NamespaceEnvelope)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sshKeygen(t), "-Y", "verify", "-f", allowed, "-I", "admin", "-n", NamespaceEnvelope, "-s", "/dev/stdin")
			cmd.Stdin = bytes.NewReader(ours)
			// ssh-keygen reads the message from stdin too; give it the signature as a file.
			sigPath := filepath.Join(dir, "ours.sig")
			os.WriteFile(sigPath, ours, 0o600)
			cmd = exec.Command(sshKeygen(t), "-Y", "verify", "-f", allowed, "-I", "admin", "-n", NamespaceEnvelope, "-s", sigPath)
			cmd.Stdin = bytes.NewReader(msg)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen -Y verify of our signature: %v: %s", err, out)
			}
			if kt.typ == "rsa" {
				sig, _ := parseSignature(ours)
				if sig.Signature.Format != ssh.KeyAlgoRSASHA512 {
					t.Errorf("RSA signature format = %s; want rsa-sha2-512", sig.Signature.Format)
				}
			}
		})
	}
}

func TestAllowedSignersParser(t *testing.T) {
	_, _, ed := genKey(t, "ed25519", "")
	fields := strings.Fields(ed)
	tests := []struct {
		name    string
		line    string
		wantErr error
		check   func(t *testing.T, s Signer)
	}{
		{"plain", "alice " + ed, nil, func(t *testing.T, s Signer) {
			if s.Principals[0] != "alice" {
				t.Errorf("principals = %v", s.Principals)
			}
		}},
		{"quoted_principals_and_options", `"alice,bob" namespaces="fleetprov-envelope-v1,git",valid-after="20200101",valid-before="20991231Z" ` + ed, nil, func(t *testing.T, s Signer) {
			if len(s.Principals) != 2 || len(s.Namespaces) != 2 || s.ValidAfter.Year() != 2020 || s.ValidBefore.Location() != time.UTC {
				t.Errorf("parsed %+v", s)
			}
		}},
		{"cert_authority_refused", "*@example.com cert-authority " + ed, ErrUnsupported, nil},
		{"unknown_option", "alice no-touch-required " + ed, ErrUnsupported, nil},
		{"type_mismatch", "alice ssh-rsa " + fields[1], nil, nil},
		{"missing_key", "alice", nil, nil},
		{"bad_base64", "alice ssh-ed25519 !!!", nil, nil},
		{"bad_time", `alice valid-after="2020" ` + ed, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAllowedSigners([]byte("# comment\n\n" + tc.line + "\n"))
			if tc.check != nil {
				if err != nil {
					t.Fatalf("Parse() error = %v", err)
				}
				tc.check(t, got[0])
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q) succeeded; want an error", tc.line)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Parse() error = %v; want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "line 3") {
				t.Errorf("error %q does not name the line", err)
			}
		})
	}
}

func TestKeyValidityAndNamespaceOption(t *testing.T) {
	_, signer, ed := genKey(t, "ed25519", "")
	msg := []byte("m")
	sig, _ := Sign(msg, signer, NamespaceEnvelope)
	signers, _ := ParseAllowedSigners([]byte(`admin namespaces="fleetprov-http-v1" ` + ed + "\n"))
	if _, err := signers.Verify(msg, sig, NamespaceEnvelope, time.Now()); !errors.Is(err, ErrNamespace) {
		t.Errorf("namespace-restricted key: %v; want ErrNamespace", err)
	}
	signers, _ = ParseAllowedSigners([]byte(`admin valid-before="20000101Z" ` + ed + "\n"))
	if _, err := signers.Verify(msg, sig, NamespaceEnvelope, time.Now()); !errors.Is(err, ErrKeyNotValid) {
		t.Errorf("expired key: %v; want ErrKeyNotValid", err)
	}
	_, other, _ := genKey(t, "ed25519", "")
	sig2, _ := Sign(msg, other, NamespaceEnvelope)
	signers, _ = ParseAllowedSigners([]byte("admin " + ed + "\n"))
	if _, err := signers.Verify(msg, sig2, NamespaceEnvelope, time.Now()); !errors.Is(err, ErrUnknownSigner) {
		t.Errorf("unknown key: %v; want ErrUnknownSigner", err)
	}
	if _, err := signers.Verify(msg, nil, NamespaceEnvelope, time.Now()); !errors.Is(err, ErrMissingSignature) {
		t.Errorf("no signature: %v; want ErrMissingSignature", err)
	}
	if _, err := signers.Verify(msg, []byte("-----BEGIN SSH SIGNATURE-----\ngarbage\n-----END SSH SIGNATURE-----\n"), NamespaceEnvelope, time.Now()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("garbage signature: %v; want ErrBadSignature", err)
	}
}

func TestReplayGuardSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	g := &ReplayGuard{Dir: dir, Skew: 2 * time.Minute}
	if err := g.Accept("id-1", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	g2 := &ReplayGuard{Dir: dir, Skew: 2 * time.Minute} // a new process
	if err := g2.Accept("id-1", now.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Errorf("Accept(seen id) = %v; want ErrReplayed", err)
	}
	g2.Now = func() time.Time { return now.Add(10 * time.Minute) }
	if n, _ := g2.Prune(); n != 1 {
		t.Errorf("Prune() removed %d; want 1", n)
	}
	if err := g2.Accept("../x", now); err == nil {
		t.Errorf("Accept(../x) succeeded")
	}
}

func TestNonces(t *testing.T) {
	now := time.Now()
	n := &Nonces{Now: func() time.Time { return now }}
	issue := func(client string) string {
		t.Helper()
		s, err := n.Issue(client)
		if err != nil {
			t.Fatalf("Issue(%s) = %v", client, err)
		}
		return s
	}
	a := issue("10.0.0.1")
	if err := n.Consume(a, "10.0.0.2"); !errors.Is(err, ErrNonce) {
		t.Errorf("another client's nonce: %v", err)
	}
	if err := n.Consume(a, "10.0.0.1"); !errors.Is(err, ErrNonce) {
		t.Errorf("a nonce tried once is gone: %v", err)
	}
	b := issue("10.0.0.1")
	if err := n.Consume(b, "10.0.0.1"); err != nil {
		t.Errorf("Consume() = %v", err)
	}
	if err := n.Consume(b, "10.0.0.1"); !errors.Is(err, ErrNonce) {
		t.Errorf("reused nonce: %v", err)
	}
	c := issue("10.0.0.1")
	now = now.Add(301 * time.Second)
	if err := n.Consume(c, "10.0.0.1"); !errors.Is(err, ErrNonce) {
		t.Errorf("expired nonce: %v", err)
	}
	// The operator holds a nonce; a client at 20 requests, then many addresses, fill
	// the store: new nonces are refused, the operator's is never evicted.
	op := issue("10.0.0.1")
	for i := 0; i < 20; i++ {
		_, err := n.Issue("10.0.0.9")
		if (i < 16) != (err == nil) || (err != nil && !errors.Is(err, ErrNonceLimit)) {
			t.Errorf("per-client cap: Issue #%d = %v", i+1, err)
		}
	}
	refused := 0
	for i := 0; i < 5000; i++ {
		if _, err := n.Issue(fmt.Sprintf("127.0.%d.%d", i/250, i%250)); errors.Is(err, ErrNonceLimit) {
			refused++
		}
	}
	if n.Len() != 1024 || refused != 5000-(1024-17) {
		t.Errorf("overall cap: %d outstanding, %d refused", n.Len(), refused)
	}
	if err := n.Consume(op, "10.0.0.1"); err != nil {
		t.Errorf("the operator's nonce was evicted by a flood: %v", err)
	}
	// Expired nonces make room again.
	now = now.Add(301 * time.Second)
	if _, err := n.Issue("10.0.0.1"); err != nil {
		t.Errorf("after expiry: %v", err)
	}
}

func TestClientKeyGroupsIPv6By64(t *testing.T) {
	for _, tc := range []struct{ a, b string }{{"2001:db8::1", "2001:db8::ffff:1"}, {"2001:db8:0:0:1::", "2001:db8::2"}} {
		if ClientKey(tc.a) != ClientKey(tc.b) {
			t.Errorf("ClientKey(%s) = %s, ClientKey(%s) = %s; want one /64", tc.a, ClientKey(tc.a), tc.b, ClientKey(tc.b))
		}
	}
	if ClientKey("2001:db8:0:1::1") == ClientKey("2001:db8:0:2::1") || ClientKey("10.0.0.1") == ClientKey("10.0.0.2") {
		t.Error("different /64s or IPv4 addresses share a key")
	}
}

func TestReplayGuardBounded(t *testing.T) {
	now := time.Now()
	g := &ReplayGuard{Dir: t.TempDir(), Max: 5, Now: func() time.Time { return now }}
	for i := range 5 {
		if err := g.Accept(fmt.Sprintf("id-%d", i), now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Accept("id-5", now.Add(time.Minute)); !errors.Is(err, ErrReplayFull) {
		t.Fatalf("Accept past Max = %v; want ErrReplayFull", err)
	}
	if entries, _ := os.ReadDir(g.Dir); len(entries) != 5 {
		t.Errorf("replay dir holds %d records; want 5", len(entries))
	}
	now = now.Add(2 * time.Minute) // the first five expired: the next Accept prunes them
	if err := g.Accept("id-5", now.Add(time.Minute)); err != nil {
		t.Errorf("Accept after expiry = %v", err)
	}
	if entries, _ := os.ReadDir(g.Dir); len(entries) != 1 {
		t.Errorf("replay dir holds %d records after pruning; want 1", len(entries))
	}
}

// Allows re-reads no signature: a fleet-trust signer may do everything, proof of
// possession only apply, an unknown basis nothing (an admin's policy is TestPushPlan's validate-only signer).
func TestAllowsByBasis(t *testing.T) {
	tr := &Trust{}
	for _, c := range []struct {
		basis, op string
		ok        bool
	}{{"fleet-trust", "current", true}, {"possession", "apply", true}, {"possession", "validate", false}, {"", "apply", false}} {
		err := tr.Allows(Decision{Basis: c.basis}, c.op, Target{}, nil)
		if (err == nil) != c.ok {
			t.Errorf("%s may %s: %v; want allowed %v", c.basis, c.op, err, c.ok)
		}
	}
}

// The active signers are parsed once and kept, but never past a change of the file: an
// admin removed by a new config is refused by the same Trust that let it in before.
func TestActiveSignersFollowTheFile(t *testing.T) {
	a, lineA := configtest.NewKey(t)
	_, lineB := configtest.NewKey(t)
	d := state.Dir{Root: t.TempDir()}
	if err := os.MkdirAll(d.Active(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Active(), "config.toml"), configtest.FixtureWithAdmin(t, "vm-full.config.toml", lineA), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := &Trust{State: d}
	msg := []byte("request")
	sig, err := Sign(msg, a, NamespaceEnvelope)
	if err != nil {
		t.Fatal(err)
	}
	signers := filepath.Join(d.Active(), "allowed_signers")
	for i, c := range []struct {
		file string
		ok   bool
	}{{"admin " + lineA + "\n", true}, {"admin " + lineB + "\n", false}, {"admin " + lineA + "\n", true}} {
		if err := os.WriteFile(signers, []byte(c.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := tr.Verify(msg, sig, NamespaceEnvelope, "current", Target{Kind: "device"}, nil)
		if (err == nil) != c.ok {
			t.Fatalf("step %d: verify = %v; want accepted %v", i, err, c.ok)
		}
	}
}
