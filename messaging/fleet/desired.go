package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// ErrNoJetStream is returned by OpenDesired when the server the publisher is connected to
// keeps no durable state (a standalone device, or a hub without JetStream): pushes are
// then one-shot requests.
var ErrNoJetStream = errors.New("no JetStream: this server keeps no durable desired state")

// DesiredHistory is how many revisions of each desired-state key the hub keeps: what a
// revert goes back to.
const DesiredHistory = 10

// DesiredStore is the fleet's durable state on its hub: the desired-state KV bucket (a
// signed envelope per device, group and the fleet) and the device-status stream.
type DesiredStore struct {
	c      *Client
	js     jetstream.JetStream
	kvMu   sync.Mutex
	kv     jetstream.KeyValue // made by OpenDesired; looked up by Delete after LookupDesired
	bucket jetstream.Stream
	status jetstream.Stream
	// refs are the payloads put in the fleet's object store, by digest (offload).
	refsMu sync.Mutex
	refs   map[string]*wire.PayloadRef
}

// OpenDesired opens the fleet's durable state, creating its bucket and status stream on
// first use; ErrNoJetStream when the server has none.
func (c *Client) OpenDesired(ctx context.Context) (*DesiredStore, error) {
	return c.openDesired(ctx, true)
}

// LookupDesired opens the fleet's durable state without creating or changing anything
// on the hub (for readers: publisher status); ErrNoDesiredState when nothing was pushed
// durably yet.
func (c *Client) LookupDesired(ctx context.Context) (*DesiredStore, error) {
	return c.openDesired(ctx, false)
}

// ErrNoDesiredState is LookupDesired's answer for a hub that holds no durable state of
// the fleet yet.
var ErrNoDesiredState = errors.New("the hub holds no desired state of this fleet yet (no durable push)")

func (c *Client) openDesired(ctx context.Context, create bool) (*DesiredStore, error) {
	if c.http != nil {
		return nil, ErrNoJetStream
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
			errors.Is(err, nats.ErrNoResponders) {
			return nil, ErrNoJetStream
		}
		return nil, fmt.Errorf("JetStream account info: %w", err)
	}
	b := subjects.DesiredBucket(c.fleet)
	d := &DesiredStore{c: c, js: js}
	if create {
		d.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b, History: DesiredHistory,
			Description: "fleetprov desired state of fleet " + c.fleet + ": signed envelopes per device, group and all",
			Storage:     jetstream.FileStorage, MaxValueSize: int32(c.nc.MaxPayload()),
			RePublish: &jetstream.RePublish{Source: subjects.DesiredKV(c.fleet, ">"), Destination: subjects.DesiredNotify(c.fleet, ">")}})
		if err == nil {
			d.status, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: subjects.StatusStream(c.fleet),
				Description: "fleetprov device status of fleet " + c.fleet + ": the last signed status of each device",
				Subjects:    []string{subjects.StatusOf(c.fleet, "*")}, MaxMsgsPerSubject: 1, Storage: jetstream.FileStorage,
				AllowDirect: true, Discard: jetstream.DiscardOld})
		}
	} else if d.bucket, err = js.Stream(ctx, "KV_"+b); err == nil {
		// Looked up, not made: the bucket's stream is all a reader needs (Delete opens
		// the key-value handle when it is used).
		d.status, err = js.Stream(ctx, subjects.StatusStream(c.fleet))
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoDesiredState
	}
	if err != nil {
		return nil, fmt.Errorf("the fleet's durable state on the hub: %w", err)
	}
	if d.bucket == nil {
		if d.bucket, err = js.Stream(ctx, "KV_"+b); err != nil {
			return nil, fmt.Errorf("desired-state bucket %s: %w", b, err)
		}
	}
	return d, nil
}

// DesiredEntry is one desired-state value: a signed durable envelope.
type DesiredEntry struct {
	Key string
	Env *envelope.Envelope
	Raw []byte
	Sig string
}

// Stamp makes a durable envelope for key's target (dev.<d>, grp.<g>, all) carrying p.
func (d *DesiredStore) Stamp(key string, p Payload) (*envelope.Envelope, error) {
	var env *envelope.Envelope
	switch {
	case strings.HasPrefix(key, subjects.Device+"."):
		env = d.c.NewEnvelope("apply", strings.TrimPrefix(key, subjects.Device+"."), "", p)
	case strings.HasPrefix(key, subjects.Group+"."):
		env = d.c.NewEnvelope("apply", "", strings.TrimPrefix(key, subjects.Group+"."), p)
	case key == subjects.AllKey:
		env = d.c.NewEnvelope("apply", "", "", p)
	default:
		return nil, fmt.Errorf("%w: desired-state key %q", ErrInvalidOption, key)
	}
	env.Durable, env.Payload = true, p.Data
	if env.Payload == nil {
		env.Payload = []byte{}
	}
	d.refsMu.Lock()
	if ref := d.refs[env.PayloadSHA256]; ref != nil {
		r := *ref
		env.Payload, env.PayloadRef = nil, &r
	}
	d.refsMu.Unlock()
	return env, nil
}

// offload puts p in the fleet's payload object store on the hub when it is too large to
// travel inside a KV value, so that the envelopes Stamp makes of it reference it (a
// device reads it with direct gets and checks its digest); small payloads stay inline.
// An object already there under the payload's digest is not written again.
func (d *DesiredStore) offload(ctx context.Context, p Payload) error {
	if len(p.Data) <= d.c.inlineLimit() {
		return nil
	}
	sum := p.digest()
	d.refsMu.Lock()
	defer d.refsMu.Unlock()
	if d.refs[sum] != nil {
		return nil
	}
	obs, err := d.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: subjects.PayloadBucket(d.c.fleet),
		Description: "fleetprov payloads of fleet " + d.c.fleet + " too large for its desired-state values, named by SHA-256",
		Storage:     jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("the hub's payload store: %w", err)
	}
	h := sha256.New()
	h.Write(p.Data)
	// Written again unless the object there is this payload (the store's own digest):
	// one swapped on the hub is repaired by pushing again.
	if info, err := obs.GetInfo(ctx, sum); err != nil || info.Deleted || info.Digest != jetstream.GetObjectDigestValue(h) {
		if _, err := obs.PutBytes(ctx, sum, p.Data); err != nil {
			return fmt.Errorf("storing the %d-byte payload on the hub: %w", len(p.Data), err)
		}
	}
	if d.refs == nil {
		d.refs = map[string]*wire.PayloadRef{}
	}
	d.refs[sum] = &wire.PayloadRef{Object: sum, Size: int64(len(p.Data))}
	return nil
}

// restamp is a new envelope for key with prev's payload (inline or its object).
func (d *DesiredStore) restamp(key string, prev *envelope.Envelope) (*envelope.Envelope, error) {
	env, err := d.Stamp(key, Payload{Data: prev.Payload, ContentType: prev.ContentType})
	if err != nil || prev.PayloadRef == nil {
		return env, err
	}
	r := *prev.PayloadRef
	env.Payload, env.PayloadRef, env.PayloadSHA256 = nil, &r, prev.PayloadSHA256
	return env, nil
}

// Put signs env and writes it as key's desired state; the bucket tells the devices.
func (d *DesiredStore) Put(ctx context.Context, key string, env *envelope.Envelope) (DesiredEntry, error) {
	if d.c.signer == nil {
		return DesiredEntry{}, fmt.Errorf("%w: desired state needs a signing key", ErrInvalidOption)
	}
	if !env.Durable || (env.PayloadRef != nil && env.PayloadRef.Object == "") {
		return DesiredEntry{}, fmt.Errorf("%w: desired state is a durable envelope with its payload inline or in the hub's object store", ErrInvalidOption)
	}
	raw, err := d.encode(env)
	if err != nil {
		return DesiredEntry{}, err
	}
	sig, err := envelope.Sign(raw, d.c.signer)
	if err != nil {
		return DesiredEntry{}, err
	}
	msg := nats.NewMsg(subjects.DesiredKV(d.c.fleet, key))
	msg.Data = raw
	msg.Header.Set(envelope.SignatureHeader, sig)
	// A hub taking 1,000 writes at once may not acknowledge one in time: it is sent
	// again, and the message id makes the stream store it once.
	for attempt := 1; ; attempt++ {
		_, err = d.js.PublishMsg(ctx, msg, jetstream.WithMsgID(env.ID+"."+key))
		if err == nil || attempt == putAttempts || ctx.Err() != nil ||
			!(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			break
		}
	}
	if err != nil {
		return DesiredEntry{}, fmt.Errorf("writing desired state %s: %w", key, err)
	}
	return DesiredEntry{Key: key, Env: env, Raw: raw, Sig: sig}, nil
}

// putAttempts is how many times Put sends a write the hub did not acknowledge in time.
const putAttempts = 3

// encode encodes env, refusing one too large for a KV value (the hub's max payload).
func (d *DesiredStore) encode(env *envelope.Envelope) ([]byte, error) {
	raw, err := env.Encode()
	if err != nil {
		return nil, err
	}
	// Room for the signature header and a device's sealed secrets.
	if limit := int(d.c.nc.MaxPayload()) - 8192; len(raw) > limit {
		return nil, fmt.Errorf("%w: the envelope is %d bytes; durable desired state holds at most %d (the hub's max payload): push a smaller bundle, or push it one-shot with --durable off",
			ErrInvalidOption, len(raw), limit)
	}
	return raw, nil
}

// entry decodes a stored message.
func entry(key string, m *jetstream.RawStreamMsg) (DesiredEntry, error) {
	env, err := envelope.Decode(m.Data)
	if err != nil {
		return DesiredEntry{}, fmt.Errorf("desired state %s (revision %d): %w", key, m.Sequence, err)
	}
	return DesiredEntry{Key: key, Env: env, Raw: m.Data, Sig: m.Header.Get(envelope.SignatureHeader)}, nil
}

// Get returns key's desired state (false when it has none, or it was deleted).
func (d *DesiredStore) Get(ctx context.Context, key string) (DesiredEntry, bool, error) {
	m, err := d.bucket.GetLastMsgForSubject(ctx, subjects.DesiredKV(d.c.fleet, key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DesiredEntry{}, false, nil
	}
	if err != nil {
		return DesiredEntry{}, false, fmt.Errorf("reading desired state %s: %w", key, err)
	}
	if subjects.KVDeleted(m.Header) {
		return DesiredEntry{}, false, nil
	}
	e, err := entry(key, m)
	return e, err == nil, err
}

// Delete removes key's desired state (the device falls back to its groups' and the
// fleet's keys; nothing it applied is undone).
func (d *DesiredStore) Delete(ctx context.Context, key string) error {
	d.kvMu.Lock()
	if d.kv == nil {
		kv, err := d.js.KeyValue(ctx, subjects.DesiredBucket(d.c.fleet))
		if err != nil {
			d.kvMu.Unlock()
			return fmt.Errorf("desired-state bucket: %w", err)
		}
		d.kv = kv
	}
	kv := d.kv
	d.kvMu.Unlock()
	if err := kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("deleting desired state %s: %w", key, err)
	}
	return nil
}

// All returns every key's desired state.
func (d *DesiredStore) All(ctx context.Context) (map[string]DesiredEntry, error) {
	prefix := subjects.DesiredKV(d.c.fleet, "")
	out := map[string]DesiredEntry{}
	err := lastPerSubject(ctx, d.bucket, prefix+">", func(m jetstream.Msg) error {
		if subjects.KVDeleted(m.Headers()) {
			return nil
		}
		key := strings.TrimPrefix(m.Subject(), prefix)
		env, err := envelope.Decode(m.Data())
		if err != nil {
			return fmt.Errorf("desired state %s: %w", key, err)
		}
		out[key] = DesiredEntry{Key: key, Env: env, Raw: m.Data(), Sig: m.Headers().Get(envelope.SignatureHeader)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading desired state: %w", err)
	}
	return out, nil
}

// lastPerSubject hands each subject's last message in st under filter to each, through
// one ordered consumer: a fleet's desired state or statuses in a few round trips, not one
// API call per device (which is minutes across a WAN for 1,000 devices).
func lastPerSubject(ctx context.Context, st jetstream.Stream, filter string, each func(jetstream.Msg) error) error {
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs == 0 {
		return nil // an ordered consumer would wait for a first message
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy})
	if err != nil {
		return err
	}
	for {
		batch, err := cons.Fetch(1024, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if err := each(m); err != nil {
				return err
			}
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s: no message within 5s", filter)
		}
	}
}

// DeviceStatus is a device's recorded status as the publisher sees it: what the device
// signed, and the publisher's verdict on the signature.
type DeviceStatus struct {
	wire.Status
	// Enrollment is the signature's verdict (enrolled, unenrolled, impostor); an
	// impostor's status is not believed (its fields are zero but Device).
	Enrollment string `json:"enrollment,omitempty"`
}

// Statuses returns every device's last recorded status, by device.
func (d *DesiredStore) Statuses(ctx context.Context) (map[string]DeviceStatus, error) {
	out := map[string]DeviceStatus{}
	err := lastPerSubject(ctx, d.status, subjects.StatusOf(d.c.fleet, "*"), func(m jetstream.Msg) error {
		dev := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
		out[dev] = d.c.deviceStatus(dev, m.Data(), m.Headers().Get(wire.DeviceSignatureHeader))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("status stream: %w", err)
	}
	return out, nil
}

// deviceStatus decodes and checks one status message of dev.
func (c *Client) deviceStatus(dev string, data []byte, sig string) DeviceStatus {
	var st wire.Status
	if err := json.Unmarshal(data, &st); err != nil || st.Device != dev || st.Fleet != c.fleet {
		return DeviceStatus{Status: wire.Status{Device: dev}, Enrollment: EnrollmentImpostor}
	}
	ds := DeviceStatus{Status: st}
	switch err := c.verifyDeviceTOFU(dev, data, sig, false); {
	case errors.Is(err, ErrUnenrolled):
		ds.Enrollment = EnrollmentUnenrolled
	case err != nil:
		c.log.Warn("ignoring a device status", "device", dev, "err", err)
		return DeviceStatus{Status: wire.Status{Device: dev}, Enrollment: EnrollmentImpostor}
	case c.known != nil:
		ds.Enrollment = EnrollmentEnrolled
	}
	return ds
}

// WatchStatus calls f with each status a device records from now on, until the returned
// stop is called.
func (d *DesiredStore) WatchStatus(f func(DeviceStatus)) (func(), error) {
	sub, err := d.c.nc.Subscribe(subjects.StatusOf(d.c.fleet, "*"), func(m *nats.Msg) {
		dev := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		f(d.c.deviceStatus(dev, m.Data, m.Header.Get(wire.DeviceSignatureHeader)))
	})
	if err != nil {
		return nil, fmt.Errorf("following device status: %w", err)
	}
	return func() { sub.Unsubscribe() }, nil
}

// Convergence states of a device (publisher status).
const (
	ConvConverged  = "converged"   // applied its desired state, and it succeeded
	ConvDrifted    = "drifted"     // converged, but its files differ from what was applied
	ConvApplying   = "applying"    // its desired state's job runs
	ConvFailed     = "failed"      // its desired state's job failed
	ConvRolledBack = "rolled-back" // ... and was rolled back
	ConvRejected   = "rejected"    // it refused its desired state (Detail says why)
	ConvPending    = "pending"     // it has not taken its newest desired state (offline, or busy)
	ConvAhead      = "ahead"       // it applied something newer than its desired state (a one-shot push)
	ConvNone       = "no-desired-state"
	ConvImpostor   = EnrollmentImpostor // its status record is not signed by its enrolled key
)

// Convergence is one device's desired state against what it applied.
type Convergence struct {
	Device     string    `json:"device"`
	Groups     []string  `json:"groups,omitempty"` // as its status record claims them
	State      string    `json:"state"`
	Desired    string    `json:"desired,omitempty"`     // envelope id
	DesiredKey string    `json:"desired_key,omitempty"` // the key it comes from
	Applied    string    `json:"applied,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	Seen       time.Time `json:"seen,omitzero"` // the status record's time
	Enrollment string    `json:"enrollment,omitempty"`
}

// View is the fleet's desired state and statuses as read at one time; a watcher keeps it
// current with Update instead of reading everything again.
type View struct {
	Desired  map[string]DesiredEntry
	Statuses map[string]DeviceStatus
}

// View reads the desired state and the statuses.
func (d *DesiredStore) View(ctx context.Context) (*View, error) {
	entries, err := d.All(ctx)
	if err != nil {
		return nil, err
	}
	sts, err := d.Statuses(ctx)
	if err != nil {
		return nil, err
	}
	return &View{Desired: entries, Statuses: sts}, nil
}

// Update takes a status record as WatchStatus hands it over.
//
// A record older than the one the view holds (a watched record queued while the view was
// read) is ignored. A forged one (an impostor's, which carries no time) is shown, as a full
// read of the stream would show it.
func (v *View) Update(s DeviceStatus) {
	if cur, ok := v.Statuses[s.Device]; ok && s.Enrollment != EnrollmentImpostor && cur.Time.After(s.Time) {
		return
	}
	v.Statuses[s.Device] = s
}

// Convergences compares each device of the view (and the extra ones, which have no
// status yet) with its desired state, sorted by device.
func (v *View) Convergences(extra ...string) []Convergence {
	out := make([]Convergence, 0, len(v.Statuses)+len(extra))
	for dev, st := range v.Statuses {
		out = append(out, converge(dev, st, v.Desired))
	}
	for _, dev := range extra {
		if _, ok := v.Statuses[dev]; !ok {
			out = append(out, converge(dev, DeviceStatus{Status: wire.Status{Device: dev}}, v.Desired))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

func converge(dev string, st DeviceStatus, entries map[string]DesiredEntry) Convergence {
	cv := Convergence{Device: dev, Groups: st.Groups, Applied: st.Applied, Seen: st.Time, Enrollment: st.Enrollment}
	if st.Enrollment == EnrollmentImpostor {
		cv.State, cv.Detail = ConvImpostor, "its status record is not signed by its enrolled key"
		return cv
	}
	var want *DesiredEntry
	for _, k := range subjects.DesiredKeys(dev, st.Groups) {
		if e, ok := entries[k]; ok && (want == nil || e.Env.Newer(want.Env.IssuedAt, want.Env.ID)) {
			want = &e
		}
	}
	if want == nil {
		cv.State = ConvNone
		return cv
	}
	cv.Desired, cv.DesiredKey = want.Env.ID, want.Key
	switch {
	case st.Time.IsZero():
		cv.State, cv.Detail = ConvPending, "it has never recorded a status (offline since the hub has kept state, or not in the fleet)"
	case st.Applied == want.Env.ID:
		switch {
		case st.JobState == record.Succeeded && st.Drift:
			cv.State, cv.Detail = ConvDrifted, "its files differ from the applied config"
		case st.JobState == record.Succeeded:
			cv.State = ConvConverged
		case st.JobState == record.Submitted || st.JobState == record.Running:
			cv.State = ConvApplying
		case st.JobState == "":
			cv.State, cv.Detail = ConvConverged, "its job record is no longer kept"
		case st.RollbackStatus != "":
			cv.State, cv.Detail = ConvRolledBack, strings.TrimSpace(st.Code+": "+st.Error+" (rollback "+string(st.RollbackStatus)+")")
		default:
			cv.State, cv.Detail = ConvFailed, strings.TrimSpace(st.Code+": "+st.Error)
		}
	case st.Desired == want.Env.ID && st.JobState == "" && st.Code != "":
		cv.State, cv.Detail = ConvRejected, st.Code+": "+st.Error
	case !st.AppliedIssuedAt.IsZero() && !want.Env.Newer(st.AppliedIssuedAt, st.Applied):
		cv.State, cv.Detail = ConvAhead, "it applied a newer one-shot push"
	default:
		cv.State, cv.Detail = ConvPending, "it has not taken its newest desired state yet (offline or busy)"
	}
	return cv
}
