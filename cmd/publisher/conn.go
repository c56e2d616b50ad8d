package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/term"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
)

// connFlags are the connection and signing flags of every networked command.
type connFlags struct {
	server, creds, fleetName, key, keyID, via string
	known                                     string
	tofu                                      bool
	// named: the command addresses devices by id (--device), so first use through a
	// local NATS server may enrol them; discovery (--group, --all) never enrols by itself.
	named   bool
	timeout time.Duration
	env     cli.Env
}

func (c *connFlags) register(fs *flag.FlagSet, signing bool) {
	fs.StringVar(&c.server, "server", "nats://127.0.0.1:4222", "NATS URL of the hub, or of one device's embedded server")
	fs.StringVar(&c.creds, "creds", "", "NATS credentials: a creds file (publisher nats creds), or an nkey seed file such as a device's <state-dir>/nats-admin.nk for its own listener (default: the fleet's publisher.creds from 'publisher nats init' when it exists)")
	fs.StringVar(&c.fleetName, "fleet", "default", "fleet name")
	fs.DurationVar(&c.timeout, "reply-timeout", 10*time.Second, "how long to wait for a device's answer")
	fs.StringVar(&c.via, "via", "", "reach one device through its HTTP bridge (http://device:8080) instead of NATS")
	fs.StringVar(&c.known, "known-devices", "", "file of enrolled device keys (default ~/.config/fleetprov/known_devices)")
	fs.BoolVar(&c.tofu, "tofu", false, "trust on first use: enrol a device that is not in known-devices with the key it signs with (a device named with --device through a NATS server on localhost, or reached with --via on localhost, is enrolled on first use anyway, and printed)")
	if signing {
		fs.StringVar(&c.key, "key", "", "OpenSSH private key to sign with (default: the first suitable key in $SSH_AUTH_SOCK)")
		fs.StringVar(&c.keyID, "key-id", "", "with ssh-agent: pick the key whose fingerprint or comment contains this")
	}
}

// connect opens the NATS connection; a failure is exit code 3.
func (c *connFlags) connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("fleetprov-publisher"), nats.Timeout(5 * time.Second)}
	creds := c.credsFile()
	if creds != "" {
		opt, err := credsOption(creds)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opt)
	}
	nc, err := nats.Connect(c.server, opts...)
	if errors.Is(err, nats.ErrAuthorization) {
		used := "a connection without credentials"
		if creds != "" {
			used = "the credentials in " + creds
		}
		return nil, cli.Exit(cli.ExitUnreachable, fmt.Errorf("%s refused %s: pass --creds FILE (for the hub: publisher nats creds; for a device's own listener: its <state-dir>/nats-admin.nk; or reach the device with --via http://device:8080)",
			c.server, used))
	}
	if err != nil {
		return nil, cli.Exit(cli.ExitUnreachable, fmt.Errorf("connecting to %s: %w", c.server, err))
	}
	return nc, nil
}

// credsFile is --creds (or $FLEETPROV_CREDS, like every flag), else the fleet's
// publisher.creds when 'publisher nats init' made one ("" when none: an anonymous
// connection).
func (c *connFlags) credsFile() string {
	if c.creds != "" {
		return c.creds
	}
	dir, err := natsDir("", c.fleetName, c.env)
	if err != nil {
		return ""
	}
	p := filepath.Join(dir, natsauth.PublisherCreds)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// credsOption authenticates with a creds file (JWT and seed) or a bare nkey seed file.
func credsOption(path string) (nats.Option, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.Usagef("reading --creds: %v", err)
	}
	if strings.Contains(string(raw), "BEGIN NATS USER JWT") {
		return nats.UserCredentials(path), nil
	}
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		return nil, cli.Usagef("--creds %s is neither a NATS creds file nor an nkey seed file: %v", path, err)
	}
	return opt, nil
}

// client connects (NATS, or the --via HTTP bridge) and builds a fleet client, with a
// signer when sign is true. closeFn releases the connection.
func (c *connFlags) client(stdio cli.IO, sign bool) (cl *fleet.Client, closeFn func(), err error) {
	var opts []fleet.Option
	if sign {
		s, err := c.signer(stdio)
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, fleet.WithSigner(s))
	}
	known, tofu, err := c.knownDevices()
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts, fleet.WithKnownDevices(known, tofu, func(dev, fp string) {
		fmt.Fprintf(stdio.Stderr, "enrolled %s on first use: identity %s (recorded in %s)\n", dev, fp, known.Path())
	}))
	if c.via != "" {
		cl, err := fleet.NewHTTP(c.via, c.fleetName, opts...)
		if err != nil {
			return nil, nil, cli.Usagef("%v", err)
		}
		return cl, func() {}, nil
	}
	nc, err := c.connect()
	if err != nil {
		return nil, nil, err
	}
	cl, err = fleet.New(nc, c.fleetName, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, cli.Usagef("%v", err)
	}
	return cl, nc.Close, nil
}

// signer loads --key (asking for a passphrase on a terminal) or picks an agent key.
func (c *connFlags) signer(stdio cli.IO) (ssh.Signer, error) {
	if c.key != "" {
		raw, err := os.ReadFile(c.key)
		if err != nil {
			return nil, cli.Usagef("reading --key: %v", err)
		}
		s, err := ssh.ParsePrivateKey(raw)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			if !term.IsTerminal(int(os.Stdin.Fd())) {
				return nil, cli.Usagef("%s is encrypted and there is no terminal to ask for its passphrase; load it into ssh-agent instead", c.key)
			}
			fmt.Fprintf(stdio.Stderr, "Passphrase for %s: ", c.key)
			pass, rerr := term.ReadPassword(int(os.Stdin.Fd()))
			fmt.Fprintln(stdio.Stderr)
			if rerr != nil {
				return nil, fmt.Errorf("reading passphrase: %w", rerr)
			}
			s, err = ssh.ParsePrivateKeyWithPassphrase(raw, pass)
		}
		if err != nil {
			return nil, cli.Usagef("parsing --key %s: %v", c.key, err)
		}
		return s, nil
	}
	sock, ok := c.env("SSH_AUTH_SOCK")
	if !ok || sock == "" {
		return nil, cli.Usagef("no signing key: pass --key PATH or run an ssh-agent (SSH_AUTH_SOCK)")
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, cli.Usagef("connecting to ssh-agent: %v", err)
	}
	ag := agent.NewClient(conn)
	keys, err := ag.List()
	if err != nil {
		return nil, fmt.Errorf("listing agent keys: %w", err)
	}
	signers, err := ag.Signers()
	if err != nil {
		return nil, fmt.Errorf("reading agent keys: %w", err)
	}
	for i, s := range signers {
		fp := ssh.FingerprintSHA256(s.PublicKey())
		if c.keyID == "" || strings.Contains(fp, c.keyID) || (i < len(keys) && strings.Contains(keys[i].Comment, c.keyID)) {
			return s, nil
		}
	}
	if c.keyID != "" {
		return nil, cli.Usagef("no agent key matches --key-id %q", c.keyID)
	}
	return nil, cli.Usagef("ssh-agent holds no keys; ssh-add one or pass --key")
}

// target reads --device (repeatable, comma-separated), --group and --all.
type targetFlags struct {
	devices deviceList
	group   string
	all     bool
}

type deviceList []string

func (d *deviceList) String() string { return strings.Join(*d, ",") }
func (d *deviceList) Set(v string) error {
	*d = append(*d, cli.SplitList(v)...)
	return nil
}

func (t *targetFlags) register(fs *flag.FlagSet) {
	fs.Var(&t.devices, "device", "target device id (repeatable, or comma-separated)")
	fs.StringVar(&t.group, "group", "", "target every device of this group")
	fs.BoolVar(&t.all, "all", false, "target every device of the fleet")
}

func (t *targetFlags) target(need bool) (fleet.Target, error) {
	n := 0
	if len(t.devices) > 0 {
		n++
	}
	if t.group != "" {
		n++
	}
	if t.all {
		n++
	}
	if n > 1 || (need && n == 0) {
		return fleet.Target{}, cli.Usagef("give exactly one of --device, --group or --all (with --via: --device or nothing)")
	}
	return fleet.Target{Devices: t.devices, Group: t.group, All: t.all}, nil
}

// knownDevices loads the known-devices file and says whether first use is trusted:
// with --tofu, or when the NATS server is on this machine (the quick start's standalone
// worker), where a device is whatever runs here.
func (c *connFlags) knownDevices() (*fleet.KnownDevices, bool, error) {
	path := c.known
	if path == "" {
		if home, ok := c.env("HOME"); ok && home != "" {
			path = filepath.Join(home, ".config", "fleetprov", "known_devices")
		} else {
			return nil, false, cli.Usagef("no known-devices file: pass --known-devices or set HOME")
		}
	}
	k, err := fleet.LoadKnownDevices(path)
	if err != nil {
		return nil, false, err
	}
	// --via addresses exactly one device, as --device does.
	local := (c.named && localServer(c.server)) || (c.via != "" && localServer(c.via))
	return k, c.tofu || local, nil
}

// localServer reports whether a NATS or HTTP bridge URL names this machine.
func localServer(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	switch u.Hostname() {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}
