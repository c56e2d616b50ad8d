// Package core is the root of fleetprov's provisioning domain. It holds no code of its
// own, only the test that keeps the dependency arrows one way: core packages never import
// messaging/, NATS or net/http, and core/system imports no other core package.
package core
