package natsauth

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func TestSaveLoadAndRefuseOverwrite(t *testing.T) {
	f, err := Create("prod")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "nats")
	if err := f.Save(dir, "0.0.0.0:4222", "0.0.0.0:7422"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{OperatorSeedFile, AccountSeedFile, SystemSeedFile} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", name, err, st.Mode())
		}
	}
	hub, _ := os.ReadFile(filepath.Join(dir, HubConfFile))
	for _, want := range []string{`listen: "0.0.0.0:4222"`, `listen: "0.0.0.0:7422"`, "resolver: MEMORY", f.AccountPublicKey()} {
		if !strings.Contains(string(hub), want) {
			t.Errorf("hub.conf lacks %q", want)
		}
	}
	for _, kp := range []nkeys.KeyPair{f.Operator, f.Account, f.System} {
		if seed, _ := kp.Seed(); strings.Contains(string(hub), string(seed)) {
			t.Errorf("hub.conf holds a seed")
		}
	}
	g, err := Load(dir)
	if err != nil || g.Name != "prod" || g.AccountPublicKey() != f.AccountPublicKey() {
		t.Fatalf("Load = %+v, %v", g, err)
	}
	if err := f.Save(dir, "a:1", "b:2"); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("a second Save = %v; want a refusal", err)
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "publisher nats init") {
		t.Errorf("Load of an empty dir = %v", err)
	}
	if _, err := Create("bad.fleet"); err == nil {
		t.Errorf("a fleet name with a dot was accepted")
	}
}

func TestDeviceCreds(t *testing.T) {
	f, _ := Create("prod")
	creds, err := f.DeviceCreds("gw1", []string{"edge"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil || uc.Issuer != f.AccountPublicKey() {
		t.Fatalf("claims = %+v, %v", uc, err)
	}
	pub := strings.Join(uc.Pub.Allow, " ")
	sub := strings.Join(uc.Sub.Allow, " ")
	for _, want := range []string{"fleetprov.prod.evt.gw1.>", "fleetprov.prod.presence.gw1"} {
		if !strings.Contains(pub, want) {
			t.Errorf("publish allow %q lacks %q", pub, want)
		}
	}
	for _, want := range []string{"fleetprov.prod.dev.gw1.*", "fleetprov.prod.grp.edge.*", "fleetprov.prod.all.*", "fleetprov.prod.inbox.gw1.>"} {
		if !strings.Contains(sub, want) {
			t.Errorf("subscribe allow %q lacks %q", sub, want)
		}
	}
	if strings.Contains(pub+sub, "fleetprov.prod.>") || strings.Contains(sub, "_INBOX") {
		t.Errorf("device permissions too wide: pub %q sub %q", pub, sub)
	}
	// Of JetStream, exactly: direct gets of its own keys, and of the payload store.
	allowedJS := []string{"$JS.hub.API.DIRECT.GET.KV_fleetprov_prod.$KV.fleetprov_prod.dev.gw1",
		"$JS.hub.API.DIRECT.GET.KV_fleetprov_prod.$KV.fleetprov_prod.grp.edge", "$JS.hub.API.DIRECT.GET.KV_fleetprov_prod.$KV.fleetprov_prod.all",
		"$JS.hub.API.DIRECT.GET.OBJ_fleetprov_prod_payloads.$O.fleetprov_prod_payloads.M.*", "$JS.hub.API.DIRECT.GET.OBJ_fleetprov_prod_payloads"}
	for _, p := range uc.Pub.Allow {
		// No requests to devices, no other device's status, no KV writes.
		if strings.HasPrefix(p, "fleetprov.prod.dev.") || strings.HasPrefix(p, "$KV") || strings.HasPrefix(p, "$O") ||
			(strings.HasPrefix(p, "$JS") && !slices.Contains(allowedJS, p)) ||
			(strings.HasPrefix(p, "fleetprov.prod.status.") && p != "fleetprov.prod.status.gw1") {
			t.Errorf("device may publish %q", p)
		}
	}
	for _, want := range []string{"$JS.hub.API.DIRECT.GET.KV_fleetprov_prod.$KV.fleetprov_prod.dev.gw1",
		"$JS.hub.API.DIRECT.GET.KV_fleetprov_prod.$KV.fleetprov_prod.grp.edge", "$JS.hub.API.DIRECT.GET.KV_fleetprov_prod.$KV.fleetprov_prod.all",
		"fleetprov.prod.status.gw1"} {
		if !slices.Contains(uc.Pub.Allow, want) {
			t.Errorf("publish allow %q lacks %q", pub, want)
		}
	}
	for _, want := range []string{"fleetprov.prod.desired.dev.gw1", "fleetprov.prod.desired.grp.edge", "fleetprov.prod.desired.all"} {
		if !slices.Contains(uc.Sub.Allow, want) {
			t.Errorf("subscribe allow %q lacks %q", sub, want)
		}
	}
	for _, bad := range [][2]string{{"gw.1", "edge"}, {"gw1", "ed ge"}, {"", "edge"}} {
		if _, err := f.DeviceCreds(bad[0], []string{bad[1]}, 0); err == nil {
			t.Errorf("DeviceCreds(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestLoadOrCreateUser(t *testing.T) {
	p := filepath.Join(t.TempDir(), "admin.nk")
	a, created, err := LoadOrCreateUser(p)
	if err != nil || !created {
		t.Fatalf("first = %v, %v", created, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", st.Mode())
	}
	b, created, err := LoadOrCreateUser(p)
	pa, _ := a.PublicKey()
	pb, _ := b.PublicKey()
	if err != nil || created || pa != pb {
		t.Errorf("second = %s, %v, %v; want %s reused", pb, created, err, pa)
	}
	os.WriteFile(p, []byte("not a seed\n"), 0o600)
	if _, _, err := LoadOrCreateUser(p); err == nil {
		t.Errorf("a corrupt seed file was accepted")
	}
}

// A seed others can read is refused (a device's NATS admin key gives every permission on
// its listener), like the identity key.
func TestSeedReadableByOthersRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "admin.nk")
	if _, _, err := LoadOrCreateUser(p); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o644)
	if _, _, err := LoadOrCreateUser(p); err == nil || !strings.Contains(err.Error(), "readable by its owner only") {
		t.Errorf("a 0644 seed = %v; want it refused", err)
	}
}
