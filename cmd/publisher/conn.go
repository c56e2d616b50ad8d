package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/term"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/messaging/fleet"
)

// connFlags are the connection and signing flags of every networked command.
type connFlags struct {
	server, creds, fleetName, key, keyID, via string
	timeout                                   time.Duration
	env                                       cli.Env
}

func (c *connFlags) register(fs *flag.FlagSet, signing bool) {
	fs.StringVar(&c.server, "server", "nats://127.0.0.1:4222", "NATS URL of the hub, or of one device's embedded server")
	fs.StringVar(&c.creds, "creds", "", "NATS creds file")
	fs.StringVar(&c.fleetName, "fleet", "default", "fleet name")
	fs.DurationVar(&c.timeout, "reply-timeout", 10*time.Second, "how long to wait for a device's answer")
	fs.StringVar(&c.via, "via", "", "reach one device through its HTTP bridge (http://device:8080) instead of NATS")
	if signing {
		fs.StringVar(&c.key, "key", "", "OpenSSH private key to sign with (default: the first suitable key in $SSH_AUTH_SOCK)")
		fs.StringVar(&c.keyID, "key-id", "", "with ssh-agent: pick the key whose fingerprint or comment contains this")
	}
}

// connect opens the NATS connection; a failure is exit code 3.
func (c *connFlags) connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("fleetprov-publisher"), nats.Timeout(5 * time.Second)}
	if c.creds != "" {
		opts = append(opts, nats.UserCredentials(c.creds))
	}
	nc, err := nats.Connect(c.server, opts...)
	if err != nil {
		return nil, cli.Exit(cli.ExitUnreachable, fmt.Errorf("connecting to %s: %w", c.server, err))
	}
	return nc, nil
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
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*d = append(*d, p)
		}
	}
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
