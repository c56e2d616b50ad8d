package bridge

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/schemas"
)

// TestOpenAPIMatchesRoutes fails when a route is undocumented or the document names a
// route that does not exist.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	raw, err := schemas.Raw("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi = %s; want 3.1", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	var served []string
	for _, rt := range New(Options{}).routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		served = append(served, method+" "+strings.TrimSuffix(path, "{$}"))
	}
	sort.Strings(documented)
	sort.Strings(served)
	if diff := cmp.Diff(served, documented); diff != "" {
		t.Errorf("routes vs OpenAPI (-served +documented):\n%s", diff)
	}
}

// TestErrorCodesDocumented checks the one table of wire codes against the OpenAPI error
// schema and the README.
func TestErrorCodesDocumented(t *testing.T) {
	raw, _ := schemas.Raw("openapi.json")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range envelope.Codes {
		if !strings.Contains(string(readme), "`"+c.Code+"`") {
			t.Errorf("code %s missing from the README", c.Code)
		}
		if !strings.Contains(string(raw), `"`+c.Code+`"`) {
			t.Errorf("code %s missing from the OpenAPI Error schema", c.Code)
		}
		if _, ok := statusOf[c.Code]; !ok {
			t.Errorf("code %s has no HTTP status", c.Code)
		}
	}
}
