package config

import (
	"strings"
	"testing"
)

func TestRulesSecrets(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{name: "declared and used", doc: doc{containers: webWith(false, `Secret = ["db-password,type=env,target=DB_PASSWORD"]`),
			extra: "[secrets.db-password]\ndescription = \"db\""}},
		{name: "unknown reference", doc: doc{containers: webWith(false, `Secret = ["db-pasword,type=env,target=DB"]`),
			extra: "[secrets.db-password]"},
			wantPath: "containers.container.web.Container.Secret[0]", wantMsg: `secret "db-pasword" is not declared: add a [secrets.db-pasword] table (declared: db-password)`},
		{name: "reference with nothing declared", doc: doc{containers: webWith(true, `Secret = ["tok"]`)},
			wantPath: "containers.container.web.Container.Secret[0]", wantMsg: "no secrets are declared"},
		{name: "invalid name", doc: doc{extra: "[secrets.\"Bad/Name\"]"},
			wantPath: "secrets.Bad/Name", wantMsg: "invalid secret name"},
		{name: "not a table", doc: doc{extra: "[secrets]\ntok = \"value in the clear\""},
			wantPath: "secrets.tok", wantMsg: "expected object"},
		{name: "unused warns", doc: doc{extra: "[secrets.spare]"}, wantWarn: `secret "spare" is declared but no container uses it`},
	})
}

// The unknown-reference error carries the line of the Secret= key.
func TestSecretReferenceLine(t *testing.T) {
	src := doc{containers: webWith(false, `Secret = ["nope"]`)}.String()
	_, r, _ := Parse([]byte(src), Options{})
	errs := r.Errors()
	if len(errs) != 1 {
		t.Fatalf("errors = %v", errs)
	}
	line := strings.Split(src, "\n")[errs[0].Line-1]
	if !strings.HasPrefix(line, "Secret =") {
		t.Errorf("error line %d is %q", errs[0].Line, line)
	}
}

func TestSecretsRoundTrip(t *testing.T) {
	src := doc{containers: webWith(false, `Secret = ["db.password,type=mount"]`), extra: "[secrets.\"db.password\"]\ndescription = \"x\""}.String()
	m, _, err := Parse([]byte(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	m2, r, err := Parse(Encode(m), Options{})
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, r.String(), Encode(m))
	}
	if m2.Secrets["db.password"].Description != "x" || len(m2.SecretUsers()["db.password"]) != 1 {
		t.Errorf("round trip = %+v", m2.Secrets)
	}
}
