package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

func enrollCommand() *cli.Command {
	return &cli.Command{
		Name:  "enroll",
		Args:  "--device ID [--fingerprint SHA256:...] [--creds-out FILE] | --group G --tofu | --all --tofu [--creds-out DIR]",
		Short: "record devices' identity keys in known-devices, so their answers can be trusted",
		Long: `Asks each device for its presence and takes its identity key from the signature (or,
with --pubkey, takes the key as 'worker identity' printed it, without reaching the device).
With --fingerprint (one device: compare it with 'worker identity' on the device's console)
the key must match; with --tofu it is trusted as it is (a trusted network); otherwise the
fingerprint is shown and you are asked to confirm on a terminal. A device already enrolled
with another key is re-enrolled only with a matching --fingerprint.

With --creds-out, each enrolled device also gets its hub credentials, minted from the
fleet's NATS account key (publisher nats init): permissions for its own subjects and the
groups given with --groups (never the groups the device claims for itself). One
--device: --creds-out is the file; several: a directory of <device>.creds. Install the
file on the device and pass it to 'worker serve --hub-creds'. A device whose groups change
needs new credentials. --creds-out is refused with --tofu: credentials are minted only
for keys checked against a fingerprint or given with --pubkey.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, false)
			var tf targetFlags
			tf.register(fs)
			want := fs.String("fingerprint", "", "the fingerprint the device's key must have (SHA256:..., from 'worker identity')")
			discovery := fs.Duration("discovery-timeout", 3*time.Second, "upper bound for discovery")
			asJSON := fs.Bool("json", false, "print the outcome per device as JSON")
			credsOut := fs.String("creds-out", "", "also mint each enrolled device's hub credentials: a file for one --device, else a directory of <device>.creds")
			dir := fs.String("nats-dir", "", "with --creds-out: the fleet's NATS keys (default ~/.config/fleetprov/nats/<fleet>)")
			pubkey := fs.String("pubkey", "", "enrol offline, without reaching the device: its identity public key as 'worker identity' prints it (\"ssh-ed25519 AAAA...\"), or a file holding it; for a device that cannot reach the hub before it has credentials")
			groups := fs.String("groups", "", "with --creds-out: the device's groups (comma-separated); its credentials receive only these groups' requests")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				t, err := tf.target(true)
				if err != nil {
					return err
				}
				if *want != "" && len(t.Devices) != 1 {
					return cli.Usagef("--fingerprint checks one --device")
				}
				if len(t.Devices) == 0 && !cf.tofu {
					return cli.Usagef("enrolling a --group or --all needs --tofu (or enrol each --device with its --fingerprint)")
				}
				if cf.via != "" {
					return cli.Usagef("enroll works over NATS; --via is not supported")
				}
				// Checked before anything is recorded: a bad group must not leave a device
				// enrolled and reported refused.
				groupList := cli.SplitList(*groups)
				for _, g := range groupList {
					if !subjects.ValidToken(g) {
						return cli.Usagef("--groups: %q is not a group name (letters, digits, _ and -, at most 64)", g)
					}
				}
				known, _, err := cf.knownDevices()
				if err != nil {
					return err
				}
				var authority *natsauth.Fleet
				if *credsOut == "-" {
					return cli.Usagef("--creds-out needs a file or directory (credentials hold a secret seed)")
				}
				if *credsOut != "" && cf.tofu {
					return cli.Usagef("--creds-out with --tofu would mint credentials for whatever key answers; enrol with --fingerprint or --pubkey")
				}
				if *credsOut != "" {
					d, err := natsDir(*dir, cf.fleetName, stdio.Env)
					if err != nil {
						return err
					}
					if authority, err = loadAuthority(d, cf.fleetName); err != nil {
						return cli.Usagef("--creds-out: %v", err)
					}
				}
				var ids []fleet.Identity
				if *pubkey != "" {
					// Offline: the key as 'worker identity' printed it on the device.
					if len(t.Devices) != 1 {
						return cli.Usagef("--pubkey enrols one --device")
					}
					id, err := offlineIdentity(t.Devices[0], *pubkey)
					if err != nil {
						return err
					}
					ids = []fleet.Identity{id}
				} else {
					nc, err := cf.connect()
					if err != nil {
						return err
					}
					defer nc.Close()
					cl, err := fleet.New(nc, cf.fleetName)
					if err != nil {
						return cli.Usagef("%v", err)
					}
					if ids, err = cl.Identities(ctx, t, 300*time.Millisecond, *discovery); err != nil {
						return err
					}
				}
				type outcome struct {
					Device      string `json:"device"`
					Fingerprint string `json:"fingerprint"`
					Status      string `json:"status"` // enrolled, already, refused
					Error       string `json:"error,omitempty"`
					Creds       string `json:"creds,omitempty"`
				}
				var out []outcome
				impostor := false
				for _, id := range ids {
					o := outcome{Device: id.Device, Fingerprint: id.Fingerprint}
					prev, had := known.Lookup(cf.fleetName, id.Device)
					same := had && fleet.SameKey(prev, id.Key)
					switch {
					case id.Conflict != "":
						o.Status, o.Error, impostor = "refused", id.Device+" "+id.Conflict+"; enrol it with --fingerprint (from 'worker identity' on its console)", true
					case same:
						o.Status = "already"
					case *want != "" && *want != id.Fingerprint:
						o.Status, o.Error, impostor = "refused", "the device signs with "+id.Fingerprint+", not "+*want, true
					case had && *want == "":
						o.Status, o.Error, impostor = "refused", "already enrolled with another key; re-enrol with --fingerprint "+id.Fingerprint+" if the device was reinstalled", true
					case *want == "" && !cf.tofu && *pubkey == "" && !confirm(stdio, id):
						o.Status, o.Error = "refused", "not confirmed"
					default:
						if err := known.Add(cf.fleetName, id.Device, id.Key, prev); errors.Is(err, fleet.ErrEnrolmentChanged) {
							o.Status, o.Error, impostor = "refused", err.Error()+" (by another publisher); run enroll again to compare", true
							break
						} else if err != nil {
							return err
						}
						o.Status = "enrolled"
					}
					if authority != nil && o.Status != "refused" {
						// The groups are the operator's word, not the device's.
						if o.Creds, err = mintDeviceCreds(authority, id.Device, groupList, *credsOut, len(t.Devices) == 1); err != nil {
							o.Status, o.Error = "refused", "minting credentials: "+err.Error()
						}
					}
					out = append(out, o)
				}
				if *asJSON {
					b, _ := json.MarshalIndent(out, "", "  ")
					fmt.Fprintf(stdio.Stdout, "%s\n", b)
				} else {
					for _, o := range out {
						fmt.Fprintf(stdio.Stdout, "%s\t%s\t%s\t%s\n", o.Device, o.Status, o.Fingerprint, o.Error)
						if o.Creds != "" {
							fmt.Fprintf(stdio.Stdout, "%s\thub credentials written to %s\n", o.Device, o.Creds)
						}
					}
				}
				switch {
				case len(out) == 0:
					return cli.Exit(cli.ExitUnreachable, fmt.Errorf("no device answered with a signed presence"))
				case impostor:
					return cli.Exit(cli.ExitImpostor, cli.ErrReported)
				}
				for _, o := range out {
					if o.Status == "refused" {
						return cli.Exit(cli.ExitFailed, cli.ErrReported)
					}
				}
				return nil
			}
		},
	}
}

// confirm asks on the terminal whether to trust a device's key.
func confirm(stdio cli.IO, id fleet.Identity) bool {
	f, ok := stdio.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(stdio.Stderr, "%s: identity %s — pass --fingerprint (from 'worker identity' on the device) or --tofu; no terminal to ask\n", id.Device, id.Fingerprint)
		return false
	}
	fmt.Fprintf(stdio.Stderr, "Enrol %s with identity %s? Compare with 'worker identity' on its console. [y/N] ", id.Device, id.Fingerprint)
	line, _ := bufio.NewReader(f).ReadString('\n')
	return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
}

// mintDeviceCreds writes an enrolled device's hub credentials: to out itself for a single
// --device, else to out/<device>.creds.
func mintDeviceCreds(f *natsauth.Fleet, device string, groups []string, out string, single bool) (string, error) {
	creds, err := f.DeviceCreds(device, groups, 0)
	if err != nil {
		return "", err
	}
	path := out
	if !single {
		path = filepath.Join(out, device+".creds")
	}
	return path, writeCreds(path, creds, cli.IO{}) // a file: never stdout
}

// offlineIdentity is a device's identity from its public key (authorized_keys format, or
// a file holding one line of it).
func offlineIdentity(device, key string) (fleet.Identity, error) {
	// A key line of any type (ssh-ed25519, ecdsa-sha2-*, sk-ssh-*...), else a file.
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		raw, rerr := os.ReadFile(key)
		if rerr != nil {
			return fleet.Identity{}, cli.Usagef("--pubkey %q is neither a public key (ssh-ed25519 AAAA...) nor a readable file: %v", key, rerr)
		}
		if pub, _, _, _, err = ssh.ParseAuthorizedKey(raw); err != nil {
			return fleet.Identity{}, cli.Usagef("--pubkey: %v", err)
		}
	}
	return fleet.Identity{Device: device, Key: pub, Fingerprint: ssh.FingerprintSHA256(pub)}, nil
}
