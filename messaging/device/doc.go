// Package device is the transport-neutral device service: it checks a signed request
// (time window, signature and signer policy, replay, payload digest), dispatches its op
// (apply, validate, current, export, patch) to core/provision and core/jobs, runs
// mutating jobs and fans their events out to listeners, builds the device's presence,
// and maps every error to one wire code (FromError).
//
// The transports are thin adapters over it: messaging/devicenats (NATS subjects) and
// messaging/bridge (HTTP). Neither imports the other, and this package imports neither
// NATS nor net/http.
package device
