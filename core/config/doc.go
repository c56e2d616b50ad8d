// Package config owns config.toml version 1, a device's whole desired state: it parses the
// TOML, checks the structural rules with the embedded JSON Schema and the semantic rules in
// plain Go, and returns a typed, normalized Model plus a Report that holds every error and
// warning with its dotted path and TOML line. Encode turns a Model back into canonical TOML.
//
// Nothing downstream reads raw TOML again. This package does no I/O beyond its input bytes
// and must not import messaging/, net/http or NATS packages.
package config
