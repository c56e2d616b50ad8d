package bench

import (
	"bytes"
	"context"
	"testing"

	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
)

// BenchmarkApplyVMFull is one whole apply of vm-full on the simulate backend: unpack,
// validate, render, write the candidate, promote with fsyncs, deploy, activate, commit.
// Every iteration after the first is a re-apply (rollback dir and all).
func BenchmarkApplyVMFull(b *testing.B) {
	raw := configtest.Fixture(b, "vm-full.config.toml")
	d := provisiontest.New(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(raw)}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateVMFull is the offline validation (publisher validate) of vm-full:
// parse, schema, rules and render.
func BenchmarkValidateVMFull(b *testing.B) {
	raw := configtest.Fixture(b, "vm-full.config.toml")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := check.Input(context.Background(), bytes.NewReader(raw), check.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
