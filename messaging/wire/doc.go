// Package wire is the one contract between a device and whoever talks to it, whatever
// the transport: the reply to a request, the stable error codes (one table, checked
// against the README and the OpenAPI document), presence, job event messages, and the
// answers of validate and export. The device service, the NATS adapter, the HTTP bridge,
// the fleet client and both CLIs import it; it imports only leaf packages (core/record,
// core/config for report entries), so the publisher links none of the device's pipeline.
package wire
