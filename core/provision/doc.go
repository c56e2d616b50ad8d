// Package provision is the device pipeline: it ties config, bundle, quadlet, state,
// activation and jobs together into the operations a transport offers (apply, validate,
// render, export, current, patch), as an explicit ordered list of stages that emit events.
//
// It must not import messaging/, net/http or NATS packages.
package provision
