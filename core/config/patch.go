package config

import "encoding/json"

// Patch is a partial update of the active config. Every kind is applied to the active
// document, the whole result is validated, and it goes through the normal pipeline; a
// patch never touches rendered or runtime files directly.
type Patch struct {
	// Kind: users, network, containers, container-networks, container-volumes,
	// container-builds, activation.
	Kind string `json:"kind"`
	// Name of the user or resource, for keyed kinds.
	Name string `json:"name,omitempty"`
	// Op: put or delete for keyed kinds; merge (RFC 7396, null deletes) for network and
	// activation.
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value,omitempty"`
}
