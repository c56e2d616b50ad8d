package bridge

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetprov/fleetprov/messaging/wire"
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

// TestErrorCodesDocumented checks the one table of wire codes against the OpenAPI Error
// schema's enum, the README's table of codes and the HTTP statuses, both ways: a code
// missing anywhere, or documented but not in the table, fails.
func TestErrorCodesDocumented(t *testing.T) {
	raw, err := schemas.Raw("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Code struct {
							Enum []string `json:"enum"`
						} `json:"code"`
					} `json:"properties"`
				} `json:"Error"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range wire.Codes {
		want = append(want, c.Code)
	}
	sort.Strings(want)
	openapi := append([]string(nil), doc.Components.Schemas.Error.Properties.Code.Enum...)
	sort.Strings(openapi)
	if diff := cmp.Diff(want, openapi); diff != "" {
		t.Errorf("wire.Codes vs OpenAPI Error.code enum (-code table +OpenAPI):\n%s", diff)
	}
	if diff := cmp.Diff(want, readmeCodes(string(readme))); diff != "" {
		t.Errorf("wire.Codes vs the README's table of error codes (-code table +README):\n%s", diff)
	}
	var mapped []string
	for code := range statuses {
		mapped = append(mapped, code)
	}
	sort.Strings(mapped)
	if diff := cmp.Diff(want, mapped); diff != "" {
		t.Errorf("wire.Codes vs HTTP statuses (-code table +statuses):\n%s", diff)
	}
}

// readmeCodes reads the codes of the README's "Error codes" table: rows that start with
// a backquoted code, up to the next heading.
func readmeCodes(readme string) []string {
	_, rest, ok := strings.Cut(readme, "### Error codes")
	if !ok {
		return nil
	}
	if i := strings.Index(rest, "\n#"); i >= 0 {
		rest = rest[:i]
	}
	var out []string
	for _, line := range strings.Split(rest, "\n") {
		if code, ok := strings.CutPrefix(line, "| `"); ok {
			if code, _, ok := strings.Cut(code, "`"); ok {
				out = append(out, code)
			}
		}
	}
	sort.Strings(out)
	return out
}
