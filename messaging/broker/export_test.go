package broker

import "github.com/nats-io/nats-server/v2/server"

// Leafs describes the server's leafnode connections (a link dialled again gets a new ID).
func (b *Broker) Leafs() []*server.LeafInfo {
	lz, _ := b.srv.Leafz(nil)
	return lz.Leafs
}
