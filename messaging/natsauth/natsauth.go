// Package natsauth is fleetprov's NATS authentication, the NATS-native way (nkeys and JWTs,
// what nsc makes): a fleet's operator, account and system-account keys; the hub
// configuration that trusts them (stock nats-server in operator mode, memory resolver);
// and user credentials for publishers and for each device, whose permissions reach only
// that device's own subjects. It also keeps a device's local admin nkey (the only key its
// own NATS listener accepts besides the worker itself).
package natsauth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// Files in a fleet's NATS directory (publisher nats init).
const (
	OperatorSeedFile = "operator.nk"
	AccountSeedFile  = "account.nk"
	SystemSeedFile   = "system.nk"
	HubConfFile      = "hub.conf"
	PublisherCreds   = "publisher.creds"
)

// Fleet holds a fleet's NATS authority: the operator signs the accounts, the fleet account
// signs every user (publishers and devices), the system account is the hub's own.
type Fleet struct {
	Name     string
	Operator nkeys.KeyPair
	Account  nkeys.KeyPair
	System   nkeys.KeyPair
}

// Create makes a fleet's operator, account and system-account keys.
func Create(fleet string) (*Fleet, error) {
	if !subjects.ValidToken(fleet) {
		return nil, fmt.Errorf("fleet %q must match ^[A-Za-z0-9_-]{1,64}$", fleet)
	}
	f := &Fleet{Name: fleet}
	var err error
	if f.Operator, err = nkeys.CreateOperator(); err != nil {
		return nil, fmt.Errorf("creating operator key: %w", err)
	}
	if f.Account, err = nkeys.CreateAccount(); err != nil {
		return nil, fmt.Errorf("creating account key: %w", err)
	}
	if f.System, err = nkeys.CreateAccount(); err != nil {
		return nil, fmt.Errorf("creating system account key: %w", err)
	}
	return f, nil
}

// Save writes the seeds (0600), the account's public key and the hub configuration into
// dir, refusing to overwrite an existing fleet there (its devices' credentials would stop
// working).
func (f *Fleet) Save(dir, clientListen, leafListen string) error {
	if _, err := os.Stat(filepath.Join(dir, AccountSeedFile)); err == nil {
		return fmt.Errorf("%s already holds a fleet's NATS keys; remove it first to start over (every issued credential stops working)", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", dir, err)
	}
	hub, err := f.hubConfig(clientListen, leafListen, filepath.Join(abs, "jetstream"))
	if err != nil {
		return err
	}
	files := []struct {
		name string
		kp   nkeys.KeyPair
	}{{OperatorSeedFile, f.Operator}, {AccountSeedFile, f.Account}, {SystemSeedFile, f.System}}
	for _, s := range files {
		if err := writeSeed(filepath.Join(dir, s.name), s.kp); err != nil {
			return err
		}
	}
	if err := state.WriteFileAtomic(filepath.Join(dir, "fleet"), []byte(f.Name+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing fleet name: %w", err)
	}
	return state.WriteFileAtomic(filepath.Join(dir, HubConfFile), hub, 0o644)
}

// Load reads what minting credentials needs from dir: the fleet's name and its account
// key. The operator and system keys stay on disk (nil here): only Save signs with them.
func Load(dir string) (*Fleet, error) {
	f := &Fleet{}
	name, err := os.ReadFile(filepath.Join(dir, "fleet"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s holds no fleet NATS keys: run 'publisher nats init' first", dir)
		}
		return nil, fmt.Errorf("reading fleet NATS keys: %w", err)
	}
	f.Name = strings.TrimSpace(string(name))
	if f.Account, err = readSeed(filepath.Join(dir, AccountSeedFile)); err != nil {
		return nil, fmt.Errorf("fleet NATS keys: %w", err)
	}
	return f, nil
}

// AccountPublicKey is the fleet account's public nkey (A...).
func (f *Fleet) AccountPublicKey() string { pk, _ := f.Account.PublicKey(); return pk }

// jwts returns the operator JWT and the two account JWTs.
func (f *Fleet) jwts() (op, acc, sys string, err error) {
	opPub, _ := f.Operator.PublicKey()
	sysPub, _ := f.System.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "fleetprov-" + f.Name
	oc.SystemAccount = sysPub
	if op, err = oc.Encode(f.Operator); err != nil {
		return "", "", "", fmt.Errorf("signing operator JWT: %w", err)
	}
	ac := jwt.NewAccountClaims(f.AccountPublicKey())
	ac.Name = f.Name
	// JetStream is allowed (durable fleet state lives in it on hubs that run it).
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1,
		MaxAckPending: -1, MemoryMaxStreamBytes: -1, DiskMaxStreamBytes: -1}
	if acc, err = ac.Encode(f.Operator); err != nil {
		return "", "", "", fmt.Errorf("signing account JWT: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	if sys, err = sc.Encode(f.Operator); err != nil {
		return "", "", "", fmt.Errorf("signing system account JWT: %w", err)
	}
	return op, acc, sys, nil
}

// hubConfig is a stock nats-server configuration for the fleet's hub: operator mode with
// the fleet's account preloaded in a memory resolver, so every client and leafnode needs
// credentials signed by the fleet account and anonymous ones are refused. JetStream keeps
// the fleet's durable state in storeDir.
func (f *Fleet) hubConfig(clientListen, leafListen, storeDir string) ([]byte, error) {
	op, acc, sys, err := f.jwts()
	if err != nil {
		return nil, err
	}
	sysPub, _ := f.System.PublicKey()
	var b strings.Builder
	fmt.Fprintf(&b, `# fleetprov hub for fleet %q, made by 'publisher nats init'. Run: nats-server -c hub.conf
# Operator mode: every client (publishers, on %s) and every leafnode (devices, on %s)
# needs user credentials signed by the fleet account; anonymous connections are refused.
# Mint them with 'publisher nats creds' or 'publisher enroll --creds-out'.
listen: %q
leafnodes {
  listen: %q
  # Devices need only their own subjects and the operators' inboxes: the hub does not
  # send one leaf the interest of the others (without this, 1,000 devices each get the
  # whole fleet's interest graph).
  isolate_leafnode_interest: true
}
# Durable fleet state: desired state (KV) and device status, read by devices through
# their leafnode link in this domain.
jetstream {
  domain: %s
  store_dir: %q
}
operator: %q
system_account: %s
resolver: MEMORY
resolver_preload: {
  %s: %q
  %s: %q
}
`, f.Name, clientListen, leafListen, clientListen, leafListen, subjects.Domain, storeDir, op, sysPub, f.AccountPublicKey(), acc, sysPub, sys)
	return []byte(b.String()), nil
}

// DevicePermissions are what a device's credentials allow, seen from the device:
// publish its own events and presence, payload-chunk requests, and answers into reply
// inboxes; subscribe to its own device subject, its groups' and the fleet's request
// subjects, and its own inbox. It cannot subscribe to another device's requests, events or
// inbox, nor publish another device's events or presence.
//
// Answers go to "_INBOX.>" because a leafnode's own side does not track response
// permissions (allow_responses works on the hub's side only): a device can therefore
// publish into an inbox whose name it saw, that is an answer to a group or fleet request
// it received too. Such an answer is signed by its own identity key for its own device
// id, so the publisher's signature check refuses it as an impostor answer for another.
func DevicePermissions(fleet, device string, groups []string) jwt.Permissions {
	var p jwt.Permissions
	// evt.<device>.> rather than evt.<device>.*: a hub forwards the publishers' wildcard
	// interest (evt.*.*) to a leaf only when it reverse-matches a full-wildcard allow.
	p.Pub.Allow.Add(subjects.Events(fleet, device, ">"), subjects.Presences(fleet, device),
		subjects.Blobs(fleet), "_INBOX.>")
	p.Sub.Allow.Add(subjects.DeviceRequests(fleet, device), subjects.AllRequests(fleet), subjects.InboxPrefix(fleet, device)+".>")
	for _, g := range groups {
		p.Sub.Allow.Add(subjects.GroupRequests(fleet, g))
	}
	// Durable desired state: read its own keys (direct gets, no consumer), hear their
	// changes, and record its own status. Nothing else of JetStream.
	p.Pub.Allow.Add(subjects.StatusOf(fleet, device))
	for _, k := range subjects.DesiredKeys(device, groups) {
		p.Pub.Allow.Add(subjects.DirectGet(subjects.Domain, fleet, k))
		p.Sub.Allow.Add(subjects.DesiredNotify(fleet, k))
	}
	// Payloads too large for a KV value: any object's info, and chunks by direct get
	// (the request body names them, so not per device: like blob payloads, a device can
	// read the configs pushed to others; secrets are sealed per device, in envelopes).
	p.Pub.Allow.Add(subjects.ObjectInfoGets(subjects.Domain, fleet), subjects.ObjectDirectGet(subjects.Domain, fleet))
	return p
}

// PublisherPermissions are an operator's: the fleet's subjects and reply inboxes, and the
// JetStream API (the hub's durable fleet state).
func PublisherPermissions(fleet string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(subjects.Fleet(fleet), "_INBOX.>", "$JS.API.>", "$KV.>", "$O.>")
	p.Sub.Allow.Add(subjects.Fleet(fleet), "_INBOX.>", "$KV.>")
	return p
}

// Creds mints a user with perms, signed by the fleet account, as a NATS creds file. ttl 0:
// no expiry.
func (f *Fleet) Creds(name string, perms jwt.Permissions, ttl time.Duration) ([]byte, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("creating user key: %w", err)
	}
	pub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.Permissions = perms
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	tok, err := uc.Encode(f.Account)
	if err != nil {
		return nil, fmt.Errorf("signing user JWT: %w", err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		return nil, fmt.Errorf("formatting creds: %w", err)
	}
	return creds, nil
}

// DeviceCreds mints a device's credentials for its leafnode link.
func (f *Fleet) DeviceCreds(device string, groups []string, ttl time.Duration) ([]byte, error) {
	if !subjects.ValidToken(device) {
		return nil, fmt.Errorf("device id %q must match ^[A-Za-z0-9_-]{1,64}$", device)
	}
	for _, g := range groups {
		if !subjects.ValidToken(g) {
			return nil, fmt.Errorf("group %q must match ^[A-Za-z0-9_-]{1,64}$", g)
		}
	}
	return f.Creds("device:"+device, DevicePermissions(f.Name, device, groups), ttl)
}
