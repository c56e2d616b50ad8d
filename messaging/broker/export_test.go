package broker

// LeafIDs returns the server's ids of its leafnode connections (a link dialled again gets
// a new one).
func (b *Broker) LeafIDs() []uint64 {
	lz, _ := b.srv.Leafz(nil)
	var ids []uint64
	for _, l := range lz.Leafs {
		ids = append(ids, l.ID)
	}
	return ids
}

// LeafCompressions returns the compression mode of each leafnode connection.
func (b *Broker) LeafCompressions() []string {
	lz, _ := b.srv.Leafz(nil)
	var out []string
	for _, l := range lz.Leafs {
		out = append(out, l.Compression)
	}
	return out
}
