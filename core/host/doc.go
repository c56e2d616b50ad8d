// Package host turns a config's host settings into the host state they ask for (accounts
// with their SSH keys, systemd-networkd and resolved files, an nftables table of our own,
// timesyncd (or chrony) and dnsmasq settings, the OS upgrade server) and converges a host to it
// through system.Host and files under a host root. It is idempotent: converging to the
// previous config's state is how a failed activation rolls the host back.
//
// What it manages, and nothing else:
//   - accounts it created (kept in a record in the state dir); an account it did not
//     create is never changed, and a config that names one is refused;
//   - files whose names carry "fleetprov" in directories of the host root (see Paths);
//   - the nftables table "inet fleetprov" (other tables are never flushed).
//
// A [network] subsection that is absent is not managed: a config without
// [network.firewall] installs no table (and removes ours), one without [network.ntp] leaves
// timesyncd as the image has it.
package host
