// Package bench holds fleetprov's benchmarks that compare against the obvious alternative
// in the same run. Go benchmarks: `go test ./test/bench -run '^$' -bench . -benchmem`;
// extraction against GNU tar + zstd: `go run ./test/bench/extract`.
package bench
