// Package state owns the device state directory: the exclusive lock, the candidate /
// active / rollback trees and the promotion marker, written with the fsync order that
// keeps them consistent on log-structured filesystems, and the recovery that brings a
// crashed promotion back to the old or the new state, never a mix.
//
// Layout (default /var/lib/fleetprov):
//
//	config/            the active desired state
//	config.candidate/  being built
//	config.rollback/   the previous active state during a re-apply
//	config.promoting   marker: a promotion is in flight
//	.lock              flock: one mutation at a time
//
// It must not import messaging/, net/http or NATS packages.
package state
