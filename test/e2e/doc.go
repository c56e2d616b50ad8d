// Package e2e proves fleetprov on real devices: systemd as PID 1 in systemd-nspawn
// machines booted from a debootstrapped Debian trixie, with D-Bus, Podman's Quadlet
// generator and real containers, the worker installed from deploy/ as a systemd service,
// leaf-linked to a hub on the host and driven by the real publisher binary.
//
// Run it with test/e2e/run (root; it installs debootstrap and systemd-container).
package e2e
