// Package bundle reads and writes fleetprov inputs: a raw config.toml, or a .tar.gz /
// .tar.zst bundle holding config.toml and an optional files/ tree. Decompression is
// in-process and streaming; every limit (compressed size, decompressed total, member count,
// member size) is enforced while reading, so memory stays bounded by small buffers. Only
// regular files and directories with safe relative names are accepted, and extraction
// writes through an os.Root, so it cannot leave its destination.
//
// It must not import messaging/, net/http or NATS packages.
package bundle
