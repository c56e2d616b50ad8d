package provision_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/secrets"
)

// secretsConfig: a rootful web and a rootless app share db-password; only app uses
// api-token. fail marks app as failing (simulate label).
func secretsConfig(fail bool, extra string) []byte {
	label := ""
	if fail {
		label = "Label = \"fleetprov.simulate=fail\"\n"
	}
	return []byte(fmt.Sprintf(`version = 1

[users.admin]
isAdmin = true
ssh_key = %q

[activation]
required = ["web", "app"]
timeout_seconds = 5

[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "localhost/web:latest"
Secret = ["db-password,type=mount,target=/run/secrets/db"]

[containers.container.app]
privileged = false
[containers.container.app.Container]
Image = "localhost/app:latest"
Secret = ["db-password,type=env,target=DB_PASSWORD", "api-token"]
%s
[containers.container.other]
privileged = true
[containers.container.other.Container]
Image = "localhost/other:latest"

[secrets.db-password]
description = "database password"

[secrets.api-token]
%s`, configtest.AdminKey, label, extra))
}

// secretDevice is a simulated device with an identity key, and a sealer to it.
func secretDevice(t *testing.T, mutate ...func(*provision.Options)) (*provisiontest.Device, func(secrets.Values) []byte) {
	t.Helper()
	d := provisiontest.New(t, mutate...)
	signer, _, err := identity.LoadOrCreate(filepath.Join(d.StateDir, identity.DefaultFile), "test")
	if err != nil {
		t.Fatal(err)
	}
	return d, sealerTo(t, signer.PublicKey())
}

func sealerTo(t *testing.T, pub ssh.PublicKey) func(secrets.Values) []byte {
	r, err := secrets.Recipient(pub)
	if err != nil {
		t.Fatal(err)
	}
	return func(v secrets.Values) []byte {
		b, err := secrets.Seal(v, r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func applyS(t *testing.T, d *provisiontest.Device, in provision.Input) ([]record.Event, error) {
	t.Helper()
	var events []record.Event
	_, err := d.Prov.Apply(context.Background(), in, func(e record.Event) { events = append(events, e) })
	return events, err
}

func wantSecret(t *testing.T, d *provisiontest.Device, scope, name, want string) {
	t.Helper()
	got, ok := d.Sim.Secret(scope, name)
	if want == "" {
		if ok {
			t.Errorf("%s secret %s = %q; want none", scope, name, got)
		}
		return
	}
	if !ok || string(got) != want {
		t.Errorf("%s secret %s = %q (present %v); want %q", scope, name, got, ok, want)
	}
}

// noPlaintext fails if any file below dir contains one of the values.
func noPlaintext(t *testing.T, dir string, values ...string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, v := range values {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s contains the plaintext %q", p, v)
			}
		}
		return nil
	})
}

const appStore = "user(appsvc)"

func TestSecretsInstallRotateRollback(t *testing.T) {
	d, seal := secretDevice(t)
	ctx := context.Background()
	_, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(secretsConfig(false, "")),
		Secrets: seal(secrets.Values{"db-password": []byte("hunter2-v1"), "api-token": []byte("tok-v1")})})
	if err != nil {
		t.Fatal(err)
	}
	// Each store gets what its containers use: the system store only db-password (web),
	// the app user's both (app).
	wantSecret(t, d, "system", "db-password", "hunter2-v1")
	wantSecret(t, d, "system", "api-token", "")
	wantSecret(t, d, appStore, "db-password", "hunter2-v1")
	wantSecret(t, d, appStore, "api-token", "tok-v1")
	noPlaintext(t, d.StateDir, "hunter2-v1", "tok-v1")
	noPlaintext(t, d.Rootful, "hunter2-v1", "tok-v1")

	cur, err := d.Prov.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cur.Secrets) != 2 || cur.Secrets[1].Name != "db-password" || !strings.HasPrefix(cur.Secrets[1].Digest, "hmac-sha256:") ||
		strings.Join(cur.Secrets[1].UsedBy, ",") != "app,web" || cur.Secrets[1].Description != "database password" {
		t.Errorf("current secrets = %+v", cur.Secrets)
	}
	digest1 := cur.Secrets[1].Digest
	// The export as a bundle (the format that carries more than config.toml), unpacked:
	// no member holds a value or the sealed set.
	var export bytes.Buffer
	if err := d.Prov.Export(ctx, &export, bundle.FormatGzip); err != nil {
		t.Fatal(err)
	}
	unpacked := t.TempDir()
	root, err := os.OpenRoot(unpacked)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	contents, err := bundle.Unpack(ctx, &export, root, bundle.Options{})
	if err != nil || contents.Format != bundle.FormatGzip {
		t.Fatalf("unpacking the export: %+v, %v", contents, err)
	}
	if bytes.Contains(contents.Config, []byte("hunter2")) || bytes.Contains(contents.Config, []byte("tok-v1")) {
		t.Error("the exported config.toml carries a secret value")
	}
	noPlaintext(t, unpacked, "hunter2-v1", "tok-v1")
	filepath.WalkDir(unpacked, func(p string, e fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), "secrets.") {
			t.Errorf("the export carries %s", p)
		}
		return nil
	})

	// Rotation: the same config, one new value; only the containers using it restart.
	d.Sim.Reset()
	in, err := d.Prov.PreparePatch(config.Patch{Kind: "secrets", Op: "set"})
	if err != nil {
		t.Fatal(err)
	}
	in.Secrets = seal(secrets.Values{"api-token": []byte("tok-v2")})
	if _, err := applyS(t, d, in); err != nil {
		t.Fatal(err)
	}
	wantSecret(t, d, appStore, "api-token", "tok-v2")
	wantSecret(t, d, appStore, "db-password", "hunter2-v1")
	tr := d.Sim.Transcript()
	if !strings.Contains(tr, "restart app.service") || strings.Contains(tr, "restart web.service") || strings.Contains(tr, "restart other.service") {
		t.Errorf("a rotation of api-token restarted other than app:\n%s", tr)
	}
	cur, _ = d.Prov.Current(ctx)
	if cur.Secrets[1].Digest != digest1 || cur.Secrets[0].Digest == "" {
		t.Errorf("digests after rotation = %+v", cur.Secrets)
	}

	// A failing activation with a new value rolls the value back with everything else.
	_, err = applyS(t, d, provision.Input{Reader: bytes.NewReader(secretsConfig(true, "")),
		Secrets: seal(secrets.Values{"db-password": []byte("hunter2-v2")})})
	if !errors.Is(err, provision.ErrActivation) {
		t.Fatalf("failing apply: %v", err)
	}
	wantSecret(t, d, "system", "db-password", "hunter2-v1")
	wantSecret(t, d, appStore, "db-password", "hunter2-v1")
	cur, _ = d.Prov.Current(ctx)
	if cur.Secrets[1].Digest != digest1 {
		t.Errorf("digest after rollback = %s; want %s", cur.Secrets[1].Digest, digest1)
	}

	// A secret no longer declared is removed from the stores (and the state).
	noToken := bytes.Replace(secretsConfig(false, ""), []byte(`, "api-token"]`), []byte(`]`), 1)
	noToken = bytes.Replace(noToken, []byte("[secrets.api-token]\n"), nil, 1)
	if _, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(noToken)}); err != nil {
		t.Fatal(err)
	}
	wantSecret(t, d, appStore, "api-token", "")
	wantSecret(t, d, appStore, "db-password", "hunter2-v1")
	if !strings.Contains(d.Sim.Transcript(), "user(appsvc): podman secret rm api-token") {
		t.Errorf("api-token not removed:\n%s", d.Sim.Transcript())
	}
	if v, _, err := mustKeyring(t, d).Load(d.Prov.State().Active()); err != nil || len(v) != 1 {
		t.Errorf("active secrets = %v, %v", v.Names(), err)
	}
}

func mustKeyring(t *testing.T, d *provisiontest.Device) *secrets.Keyring {
	priv, err := identity.Private(filepath.Join(d.StateDir, identity.DefaultFile))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.NewKeyring(priv)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// Every rejection names the secret and leaves the active state as it was.
func TestSecretsRejected(t *testing.T) {
	d, seal := secretDevice(t)
	if _, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(secretsConfig(false, "")),
		Secrets: seal(secrets.Values{"db-password": []byte("pw"), "api-token": []byte("tok")})}); err != nil {
		t.Fatal(err)
	}
	before := provisiontest.Tree(t, d.StateDir)
	other, _ := configtest.NewKey(t)
	cases := []struct {
		name string
		in   provision.Input
		want string
	}{
		{"missing value", provision.Input{Reader: bytes.NewReader(secretsConfig(false, "[secrets.new-one]\n"))},
			`secret "new-one" has no value on this device`},
		{"undeclared value", provision.Input{Reader: bytes.NewReader(secretsConfig(false, "")), Secrets: seal(secrets.Values{"nope": []byte("x")})},
			`a value was sent for secret "nope", which this config does not declare`},
		{"not a recipient", provision.Input{Reader: bytes.NewReader(secretsConfig(false, "")), Secrets: sealerTo(t, other.PublicKey())(secrets.Values{"api-token": []byte("x")})},
			"not encrypted to this device"},
		{"garbage", provision.Input{Reader: bytes.NewReader(secretsConfig(false, "")), Secrets: []byte("age-encryption.org/v1\n-> X25519 junk\n")},
			"malformed secrets"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := applyS(t, d, c.in)
			var inv *provision.InvalidError
			if !errors.As(err, &inv) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v; want an InvalidError with %q", err, c.want)
			}
			if got := provisiontest.Tree(t, d.StateDir); got != before {
				t.Errorf("the state changed:\n%s\nwant\n%s", got, before)
			}
		})
	}
	// The missing-value error points at the declaration's line.
	_, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(secretsConfig(false, "[secrets.new-one]\n"))})
	var inv *provision.InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("missing value: %v; want an InvalidError", err)
	}
	if errs := inv.Report.Errors(); len(errs) == 0 || errs[0].Line == 0 {
		t.Errorf("no line in %+v", errs)
	}
	wantSecret(t, d, appStore, "api-token", "tok")
}

// TestSecretRemovalFailureDoesNotFailTheApply: the app user breaks its own Podman while a
// config drops its secret. The apply still succeeds (the failure is an event), the name
// stays recorded, and the next apply removes it.
func TestSecretRemovalFailureDoesNotFailTheApply(t *testing.T) {
	d, seal := secretDevice(t)
	if _, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(secretsConfig(false, "")),
		Secrets: seal(secrets.Values{"db-password": []byte("pw"), "api-token": []byte("tok")})}); err != nil {
		t.Fatal(err)
	}
	noToken := bytes.Replace(secretsConfig(false, ""), []byte(`, "api-token"]`), []byte(`]`), 1)
	noToken = bytes.Replace(noToken, []byte("[secrets.api-token]\n"), nil, 1)
	d.Sim.SetSecretsFail(errors.New("lock held by the app user"))
	// Puts fail too: db-password is still used, so this apply fails and rolls back.
	if _, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(noToken)}); err == nil || !strings.Contains(err.Error(), "lock held") {
		t.Fatalf("apply with a broken secret store = %v", err)
	}
	// Only removals fail: drop every secret user so no put is needed.
	noSecrets := noSecretUsers(noToken)
	events, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(noSecrets)})
	if err != nil {
		t.Fatalf("apply whose only secret step is a failing removal = %v", err)
	}
	failed := false
	for _, e := range events {
		failed = failed || (e.Step == "secret-install" && e.Status == "failed")
	}
	if !failed {
		t.Errorf("no failed secret-install event in %+v", events)
	}
	wantSecret(t, d, appStore, "api-token", "tok")
	d.Sim.SetSecretsFail(nil)
	if _, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(noSecrets)}); err != nil {
		t.Fatal(err)
	}
	wantSecret(t, d, appStore, "api-token", "")
	wantSecret(t, d, "system", "db-password", "")
}

// noSecretUsers is a secretsConfig whose containers are replaced by one that uses no
// secret (so an apply of it puts none and removes what fleetprov made).
func noSecretUsers(cfg []byte) []byte {
	out := []byte(strings.Split(string(cfg), "[containers.container.web]")[0] + "[containers.container.other]\nprivileged = true\n[containers.container.other.Container]\nImage = \"localhost/other:latest\"\n")
	return bytes.Replace(out, []byte(`required = ["web", "app"]`), []byte(`required = ["other"]`), 1)
}

// A crash right after a secret was put into Podman's store must not leave it there for
// good: the record names it before the put, so the next apply that no longer uses it
// removes it.
func TestSecretPutThenCrashIsStillRemoved(t *testing.T) {
	var armed atomic.Bool
	d, seal := secretDevice(t, func(o *provision.Options) {
		o.Fault = func(point string) {
			if point == "secrets:put" && armed.CompareAndSwap(true, false) {
				panic("crash after a put")
			}
		}
	})
	armed.Store(true)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the apply did not reach the crash point")
			}
		}()
		applyS(t, d, provision.Input{Reader: bytes.NewReader(secretsConfig(false, "")),
			Secrets: seal(secrets.Values{"db-password": []byte("pw"), "api-token": []byte("tok")})})
	}()
	wantSecret(t, d, "system", "db-password", "pw")
	if _, err := applyS(t, d, provision.Input{Reader: bytes.NewReader(noSecretUsers(secretsConfig(false, "")))}); err != nil {
		t.Fatalf("the next apply = %v", err)
	}
	wantSecret(t, d, "system", "db-password", "")
}
