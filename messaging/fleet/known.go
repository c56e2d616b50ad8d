package fleet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

var (
	// ErrUnenrolled is returned for a device whose key is not in known_devices (and
	// first use is not allowed).
	ErrUnenrolled = errors.New("device not enrolled")
	// ErrImpostor is returned when what a device says is not signed by its enrolled key
	// (or not signed at all, or signed for another request or job).
	ErrImpostor = errors.New("impostor")
)

// KnownDevices is the publisher's record of enrolled device keys, like known_hosts:
// one line per device, "<fleet>/<device> <key type> <base64 key>".
type KnownDevices struct {
	path string
	mu   sync.Mutex
	keys map[string]ssh.PublicKey
}

// LoadKnownDevices reads path; a missing file is an empty record.
func LoadKnownDevices(path string) (*KnownDevices, error) {
	keys, err := readKnownDevices(path)
	if err != nil {
		return nil, err
	}
	return &KnownDevices{path: path, keys: keys}, nil
}

func readKnownDevices(path string) (map[string]ssh.PublicKey, error) {
	keys := map[string]ssh.PublicKey{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return keys, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading known devices: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rest))
		if !ok || err != nil || !strings.Contains(name, "/") {
			return nil, fmt.Errorf("%s line %d: want \"<fleet>/<device> <key>\"", path, n)
		}
		keys[name] = pub
	}
	return keys, nil
}

// Lookup returns a device's enrolled key.
func (k *KnownDevices) Lookup(fleet, device string) (ssh.PublicKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	pub, ok := k.keys[fleet+"/"+device]
	return pub, ok
}

// snapshot copies the enrolled keys as they are now.
func (k *KnownDevices) snapshot() map[string]ssh.PublicKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]ssh.PublicKey, len(k.keys))
	for n, pub := range k.keys {
		out[n] = pub
	}
	return out
}

// ErrEnrolmentChanged is returned by Add when the device's enrolled key is no longer the
// one the caller expected: another publisher enrolled it meanwhile.
var ErrEnrolmentChanged = errors.New("enrolment changed")

// Add enrols (or re-enrols) a device's key and writes the file (0600, atomically); expect
// is the key the caller saw enrolled (nil: none). Under an exclusive lock on <file>.lock
// it first reads the file again: what other publishers (other processes, or another
// KnownDevices on the same file) enrolled since this one loaded it is kept, and when the
// device's key on file is not expect, nothing is written and the error wraps
// ErrEnrolmentChanged (a compare-and-set: two first uses cannot both win).
func (k *KnownDevices) Add(fleet, device string, pub, expect ssh.PublicKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return fmt.Errorf("writing known devices: %w", err)
	}
	lock, err := os.OpenFile(k.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("locking known devices: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking known devices: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	disk, err := readKnownDevices(k.path)
	if err != nil {
		return err
	}
	for n, p := range disk {
		k.keys[n] = p // the file is newer than what this process loaded
	}
	if cur := disk[fleet+"/"+device]; !SameKey(cur, expect) {
		fp := "no key"
		if cur != nil {
			fp = ssh.FingerprintSHA256(cur)
		}
		return fmt.Errorf("%w: %s is now enrolled with %s", ErrEnrolmentChanged, device, fp)
	}
	k.keys[fleet+"/"+device] = pub
	names := make([]string, 0, len(k.keys))
	for n := range k.keys {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteString("# fleetprov known devices: <fleet>/<device> <identity key> (publisher enroll)\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s", n, ssh.MarshalAuthorizedKey(k.keys[n]))
	}
	return state.WriteFileAtomic(k.path, b.Bytes(), 0o600)
}

// sameKey reports whether a and b are the same key (or both nil).
func SameKey(a, b ssh.PublicKey) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return bytes.Equal(a.Marshal(), b.Marshal())
}

// Path returns the file's path.
func (k *KnownDevices) Path() string { return k.path }

// Identity is a device's identity key as it signs its presence, unverified against
// known_devices (for enrolment).
type Identity struct {
	Device      string        `json:"device"`
	Key         ssh.PublicKey `json:"-"`
	Fingerprint string        `json:"fingerprint"`
	// Conflict, when set, says that presences signed with different keys answered for
	// this device id: at most one of them is the device.
	Conflict string `json:"conflict,omitempty"`
}

// Identities pings target (or each of t.Devices) and returns each device's identity key,
// taken from the signature of its presence reply (which must verify with that key). It
// waits for the answers to go quiet rather than stopping at the first answer per device,
// so an impostor answering first for an id is seen next to the device, as a Conflict.
func (c *Client) Identities(ctx context.Context, t Target, quiet, max time.Duration) ([]Identity, error) {
	var subjs []string
	if len(t.Devices) > 0 {
		for _, d := range t.Devices {
			s, err := subjects.Build(subjects.Subject{Fleet: c.fleet, Kind: subjects.Device, Name: d, Op: "ping"})
			if err != nil {
				return nil, err
			}
			subjs = append(subjs, s)
		}
	} else {
		s, err := t.pingSubject(c.fleet)
		if err != nil {
			return nil, err
		}
		subjs = append(subjs, s)
	}
	seen := map[string]Identity{}
	err := c.gather(ctx, subjs, quiet, max, nil, func(m *nats.Msg) bool {
		var r wire.Reply
		sig, _ := base64.StdEncoding.DecodeString(m.Header.Get(wire.DeviceSignatureHeader))
		if json.Unmarshal(m.Data, &r) == nil && r.Device != "" {
			if pub, err := auth.VerifySelf(m.Data, sig, auth.NamespaceDevice); err == nil {
				id := Identity{Device: r.Device, Key: pub, Fingerprint: ssh.FingerprintSHA256(pub)}
				if prev, ok := seen[r.Device]; ok && !SameKey(prev.Key, pub) {
					id.Conflict = "answered with two keys: " + prev.Fingerprint + " and " + id.Fingerprint
					if prev.Conflict != "" {
						id.Conflict = prev.Conflict + " and " + id.Fingerprint
					}
				} else if ok {
					id.Conflict = prev.Conflict
				}
				seen[r.Device] = id
			} else {
				c.log.Warn("presence without a valid identity signature", "device", r.Device, "err", err)
			}
		}
		return false
	})
	return sortIdentities(seen), err
}

func sortIdentities(m map[string]Identity) []Identity {
	out := make([]Identity, 0, len(m))
	for _, id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}
