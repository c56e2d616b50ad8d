// Package subjects builds and parses fleetprov's NATS subjects:
//
//	fleetprov.<fleet>.dev.<device>.<op>   to one device (request/reply)
//	fleetprov.<fleet>.grp.<group>.<op>    to every device in a group
//	fleetprov.<fleet>.all.<op>            to every device of the fleet
//	fleetprov.<fleet>.evt.<device>.<job>  job events, device -> operators
//	fleetprov.<fleet>.presence.<device>   presence and heartbeats
//	fleetprov.<fleet>.blob.<id>           chunks of a payload too large for one message
//	fleetprov.<fleet>.inbox.<device>.>    a device's own reply inbox (its blob fetches)
//
// Tokens match ^[A-Za-z0-9_-]{1,64}$; anything else is refused when built and parsed.
package subjects

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Prefix is the first token of every subject.
const Prefix = "fleetprov"

// Kinds of subject.
const (
	Device   = "dev"
	Group    = "grp"
	All      = "all"
	Event    = "evt"
	Presence = "presence"
	Blob     = "blob"
	Inbox    = "inbox"
)

// Ops a device answers.
var Ops = []string{"apply", "validate", "patch", "current", "export", "job", "ping", "confirm"}

// ErrInvalid is returned for a subject or token outside the scheme.
var ErrInvalid = errors.New("invalid subject")

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidToken reports whether s may be a fleet, device, group, job or blob token.
func ValidToken(s string) bool { return tokenRE.MatchString(s) }

// IsOp reports whether op is a known op.
func IsOp(op string) bool {
	for _, o := range Ops {
		if o == op {
			return true
		}
	}
	return false
}

// Subject is a parsed subject.
type Subject struct {
	Fleet string
	Kind  string // dev, grp, all, evt, presence, blob
	Name  string // device (dev, evt, presence), group (grp), blob id; "" for all
	Op    string // dev, grp, all
	Job   string // evt
}

// String builds the subject; it does not validate (use Build for that).
func (s Subject) String() string {
	parts := []string{Prefix, s.Fleet, s.Kind}
	switch s.Kind {
	case All:
		parts = append(parts, s.Op)
	case Device, Group:
		parts = append(parts, s.Name, s.Op)
	case Event:
		parts = append(parts, s.Name, s.Job)
	default:
		parts = append(parts, s.Name)
	}
	return strings.Join(parts, ".")
}

// Build validates s and returns its subject string.
func Build(s Subject) (string, error) {
	if err := s.validate(); err != nil {
		return "", err
	}
	return s.String(), nil
}

func (s Subject) validate() error {
	check := func(what, v string) error {
		if !ValidToken(v) {
			return fmt.Errorf("%w: %s %q must match %s", ErrInvalid, what, v, tokenRE)
		}
		return nil
	}
	if err := check("fleet", s.Fleet); err != nil {
		return err
	}
	switch s.Kind {
	case Device, Group, All:
		if s.Kind != All {
			if err := check(map[string]string{Device: "device", Group: "group"}[s.Kind], s.Name); err != nil {
				return err
			}
		}
		if !IsOp(s.Op) {
			return fmt.Errorf("%w: unknown op %q", ErrInvalid, s.Op)
		}
	case Event:
		if err := check("device", s.Name); err != nil {
			return err
		}
		return check("job", s.Job)
	case Presence, Blob:
		return check(s.Kind, s.Name)
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrInvalid, s.Kind)
	}
	return nil
}

// Parse reads a subject and validates every token.
func Parse(subject string) (Subject, error) {
	t := strings.Split(subject, ".")
	if len(t) < 4 || t[0] != Prefix {
		return Subject{}, fmt.Errorf("%w: %q", ErrInvalid, subject)
	}
	s := Subject{Fleet: t[1], Kind: t[2]}
	switch {
	case s.Kind == All && len(t) == 4:
		s.Op = t[3]
	case (s.Kind == Device || s.Kind == Group) && len(t) == 5:
		s.Name, s.Op = t[3], t[4]
	case s.Kind == Event && len(t) == 5:
		s.Name, s.Job = t[3], t[4]
	case (s.Kind == Presence || s.Kind == Blob) && len(t) == 4:
		s.Name = t[3]
	default:
		return Subject{}, fmt.Errorf("%w: %q", ErrInvalid, subject)
	}
	if err := s.validate(); err != nil {
		return Subject{}, err
	}
	return s, nil
}

// Wildcards a device subscribes to.
func DeviceRequests(fleet, device string) string {
	return Subject{Fleet: fleet, Kind: Device, Name: device, Op: "*"}.String()
}

// GroupRequests is the subscription for a group's requests.
func GroupRequests(fleet, group string) string {
	return Subject{Fleet: fleet, Kind: Group, Name: group, Op: "*"}.String()
}

// AllRequests is the subscription for fleet-wide requests.
func AllRequests(fleet string) string { return Subject{Fleet: fleet, Kind: All, Op: "*"}.String() }

// Events is the subscription for every event of one job (or "*" for all jobs).
func Events(fleet, device, job string) string {
	return Subject{Fleet: fleet, Kind: Event, Name: device, Job: job}.String()
}

// Presences is the subject of one device's presence (or "*" for every device).
func Presences(fleet, device string) string {
	return Subject{Fleet: fleet, Kind: Presence, Name: device}.String()
}

// Blobs matches every payload chunk subject of a fleet.
func Blobs(fleet string) string { return Subject{Fleet: fleet, Kind: Blob, Name: "*"}.String() }

// Fleet matches every subject of a fleet.
func Fleet(fleet string) string { return Prefix + "." + fleet + ".>" }

// InboxPrefix is a device's reply inbox prefix: its NATS credentials may subscribe below
// it and nowhere else outside its own request subjects, so a device cannot read the
// answers meant for operators or other devices.
func InboxPrefix(fleet, device string) string {
	return Subject{Fleet: fleet, Kind: Inbox, Name: device}.String()
}

// IsInbox reports whether subject lies below some device's inbox prefix.
func IsInbox(subject string) bool {
	t := strings.SplitN(subject, ".", 5)
	return len(t) == 5 && t[0] == Prefix && t[2] == Inbox
}

// Durable fleet state on a hub with JetStream (its domain is Domain):
//
//	KV bucket fleetprov_<fleet>, keys dev.<device>, grp.<group>, all: desired state, each
//	  a signed envelope; every change is republished (core NATS) on
//	  fleetprov.<fleet>.desired.<key>, which devices subscribe to
//	stream fleetprov_<fleet>_status, one message per device (the last) on
//	  fleetprov.<fleet>.status.<device>: what each device applied, signed by it
//
// Devices read their keys with JetStream direct gets (no consumer per device), through
// their leafnode link and the domain's API prefix.
const (
	Domain  = "hub"
	Desired = "desired"
	Status  = "status"
)

// DesiredBucket is the fleet's desired-state KV bucket.
func DesiredBucket(fleet string) string { return Prefix + "_" + fleet }

// StatusStream is the fleet's device-status stream.
func StatusStream(fleet string) string { return Prefix + "_" + fleet + "_status" }

// DeviceKey, GroupKey and AllKey are desired-state keys.
func DeviceKey(device string) string { return Device + "." + device }

// GroupKey is a group's desired-state key.
func GroupKey(group string) string { return Group + "." + group }

// AllKey is the fleet-wide desired-state key.
const AllKey = All

// DesiredKeys are the keys whose newest envelope is a device's desired state.
func DesiredKeys(device string, groups []string) []string {
	keys := []string{DeviceKey(device)}
	for _, g := range groups {
		keys = append(keys, GroupKey(g))
	}
	return append(keys, AllKey)
}

// DesiredNotify is the core subject a key's changes are republished on ("*"/">" allowed
// for subscriptions).
func DesiredNotify(fleet, key string) string { return Prefix + "." + fleet + "." + Desired + "." + key }

// StatusOf is the subject of a device's status ("*" for every device).
func StatusOf(fleet, device string) string { return Prefix + "." + fleet + "." + Status + "." + device }

// DesiredKV is the stream subject of key in the fleet's desired-state bucket.
func DesiredKV(fleet, key string) string { return "$KV." + DesiredBucket(fleet) + "." + key }

// DirectGet is the JetStream API subject that returns the last value of key in the
// fleet's desired-state bucket, asked through domain.
func DirectGet(domain, fleet, key string) string {
	return "$JS." + domain + ".API.DIRECT.GET.KV_" + DesiredBucket(fleet) + "." + DesiredKV(fleet, key)
}

// PayloadBucket is the fleet's object store of durable payloads too large for a KV
// value (objects named by their SHA-256).
func PayloadBucket(fleet string) string { return Prefix + "_" + fleet + "_payloads" }

// ObjectInfoGet is the JetStream API subject that returns the info (meta) of object
// name in the fleet's payload store, asked through domain.
func ObjectInfoGet(domain, fleet, name string) string {
	return objectInfoPrefix(domain, fleet) + base64.URLEncoding.EncodeToString([]byte(name))
}

// ObjectInfoGets matches ObjectInfoGet of every object in the fleet's payload store.
func ObjectInfoGets(domain, fleet string) string { return objectInfoPrefix(domain, fleet) + "*" }

func objectInfoPrefix(domain, fleet string) string {
	b := PayloadBucket(fleet)
	return "$JS." + domain + ".API.DIRECT.GET.OBJ_" + b + ".$O." + b + ".M."
}

// ObjectDirectGet is the JetStream API subject of direct gets (a JSON request body) on
// the fleet's payload store: how a device reads an object's chunks without a consumer.
func ObjectDirectGet(domain, fleet string) string {
	return "$JS." + domain + ".API.DIRECT.GET.OBJ_" + PayloadBucket(fleet)
}

// ObjectChunks is the stream subject of the chunks of the object with this NUID.
func ObjectChunks(fleet, nuid string) string { return "$O." + PayloadBucket(fleet) + ".C." + nuid }

// KVOperationHeader is the header a JetStream key-value message carries its operation in.
const KVOperationHeader = "KV-Operation"

// KVDeleted reports whether a KV message's headers mark its key deleted or purged (the
// value is then no desired state).
func KVDeleted(h map[string][]string) bool {
	v := h[KVOperationHeader]
	return len(v) > 0 && (v[0] == "DEL" || v[0] == "PURGE")
}
