// Package quadlet renders a config model into Podman Quadlet unit files and their runtime
// metadata, and syncs rendered units into systemd's Quadlet directories, touching only the
// files it manages. Render is pure; Sync does the I/O.
//
// It must not import messaging/, net/http or NATS packages.
package quadlet
