package config_test

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/schemas"
)

// derived lists model fields that are computed, not written in config.toml.
var derived = map[string]bool{"Activation.allow_degraded_set": true}

// TestSchemaMatchesModel fails when a model field has no schema property or a schema
// property has no model field, for every table of config.toml v1.
func TestSchemaMatchesModel(t *testing.T) {
	sch, err := schemas.Config()
	if err != nil {
		t.Fatal(err)
	}
	root := sch.Doc().(map[string]any)
	defs := root["$defs"].(map[string]any)
	resolve := func(n any) map[string]any {
		m, _ := n.(map[string]any)
		for m != nil {
			ref, ok := m["$ref"].(string)
			if !ok {
				break
			}
			merged := map[string]any{}
			for k, v := range defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any) {
				merged[k] = v
			}
			for k, v := range m {
				if k != "$ref" {
					merged[k] = v
				}
			}
			m = merged
		}
		return m
	}
	props := func(n map[string]any) map[string]any { p, _ := n["properties"].(map[string]any); return p }
	additional := func(n map[string]any) map[string]any { return resolve(n["additionalProperties"]) }

	var check func(typ reflect.Type, node map[string]any)
	check = func(typ reflect.Type, node map[string]any) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		var fields []string
		byName := map[string]reflect.StructField{}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" || derived[typ.Name()+"."+name] {
				continue
			}
			fields = append(fields, name)
			byName[name] = f
		}
		var schemaProps []string
		for k := range props(node) {
			schemaProps = append(schemaProps, k)
		}
		sort.Strings(fields)
		sort.Strings(schemaProps)
		if diff := cmp.Diff(schemaProps, fields); diff != "" {
			t.Errorf("%s: schema properties vs model fields (-schema +model):\n%s", typ.Name(), diff)
		}
		for name, f := range byName {
			child := resolve(props(node)[name])
			if child == nil {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Map {
				child = additional(child)
			}
			if ft == reflect.TypeOf(config.Section{}) || ft.Kind() == reflect.Slice {
				continue
			}
			check(ft, child)
		}
	}
	check(reflect.TypeOf(config.Model{}), root)
}
