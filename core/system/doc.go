// Package system is the seam between fleetprov and the operating system: small interfaces
// for the systemd managers, accounts and hooks, shaped by what activation and quadlet sync
// need, plus plain value types. Backends live in system/dbus (real) and system/simulate
// (recording, scripted health). It imports no other core package.
package system
