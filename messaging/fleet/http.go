package fleet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// httpTransport talks to one device's HTTP bridge instead of NATS (publisher --via): the
// same signed envelopes go to POST /api/envelopes, events come from the SSE stream.
//
// With known devices (see WithKnownDevices), what comes back must carry the device's
// identity signature, as over NATS: the envelope's reply (bound to its id), health,
// job records (bound to the job id) and each SSE event's signed form (bound to the job
// and in sequence). A LAN host between the publisher and the device can refuse or drop
// answers, never make a push succeed.
type httpTransport struct {
	c      *Client
	base   string
	client *http.Client
}

// maxHTTPAnswer bounds what the publisher reads of one bridge answer.
const maxHTTPAnswer = 64 << 20

// NewHTTP returns a client that reaches one device through its HTTP bridge at base (e.g.
// http://192.168.1.20:8080), with no broker in between.
func NewHTTP(base, fleet string, opts ...Option) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: --via %q must be an http(s) URL", ErrInvalidOption, base)
	}
	c, err := New(nil, fleet, opts...)
	if err != nil {
		return nil, err
	}
	c.http = &httpTransport{c: c, base: strings.TrimSuffix(base, "/"), client: &http.Client{}}
	return c, nil
}

// get reads path and decodes it into v; it returns the body and the device's signature
// of it for the caller to check against the device it expects.
func (t *httpTransport) get(ctx context.Context, path string, v any) ([]byte, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.base+path, nil)
	res, err := t.client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrNoReply, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, "", replyError(res)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxHTTPAnswer))
	if err != nil {
		return nil, "", fmt.Errorf("%w: reading %s: %w", ErrNoReply, path, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, "", fmt.Errorf("decoding %s: %w", path, err)
	}
	return body, res.Header.Get(wire.DeviceSignatureHeader), nil
}

func replyError(res *http.Response) error {
	var body struct {
		Code  string `json:"code"`
		Error string `json:"error"`
	}
	json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&body)
	if body.Code == "" {
		body.Code = "internal"
	}
	return &wire.Error{Code: body.Code, Msg: body.Error}
}

// send posts a signed envelope to device dev and decodes the reply (refusals too). A
// reply the device's handler made is signed and checked; a refusal the bridge made before
// (size, method) is not, and only ever refuses.
func (t *httpTransport) send(ctx context.Context, dev string, raw []byte, sig string, timeout time.Duration) (wire.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/api/envelopes", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(wire.FirstBootHeader, "1")
	if sig != "" {
		req.Header.Set(envelope.SignatureHeader, sig)
	}
	res, err := t.client.Do(req)
	if err != nil {
		return wire.Reply{}, fmt.Errorf("%w: %w", ErrNoReply, err)
	}
	defer res.Body.Close()
	devSig := res.Header.Get(wire.DeviceSignatureHeader)
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusAccepted && devSig == "" {
		return wire.Refuse("", replyError(res)), nil
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxHTTPAnswer))
	if err != nil {
		return wire.Reply{}, fmt.Errorf("%w: reading the reply: %w", ErrNoReply, err)
	}
	var r wire.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("decoding reply: %w", err)
	}
	if dev == "" {
		dev = r.Device
	}
	if t.c.known != nil && r.Device != dev {
		return wire.Reply{}, fmt.Errorf("%w: a reply for %s names device %q", ErrImpostor, dev, r.Device)
	}
	if err := t.c.verifyDevice(dev, body, devSig); err != nil {
		return wire.Reply{}, err
	}
	return r, nil
}

// ping reads the device's health as a presence; verify is the check of its signature
// (ErrUnenrolled for a device not enrolled), left to the caller to weigh. With dev set,
// a bridge answering as another device is refused before its key is looked at (first use
// would enrol it under the name it claims).
func (t *httpTransport) ping(ctx context.Context, dev string) (p wire.Presence, verify, err error) {
	var h struct {
		Device      string `json:"device"`
		Fleet       string `json:"fleet"`
		Version     string `json:"version"`
		Provisioned bool   `json:"provisioned"`
	}
	body, sig, err := t.get(ctx, "/api/health", &h)
	if err != nil {
		return wire.Presence{}, nil, err
	}
	p = wire.Presence{Device: h.Device, Fleet: h.Fleet, Version: h.Version, Provisioned: h.Provisioned, Groups: []string{}}
	if dev != "" && h.Device != dev {
		return p, nil, fmt.Errorf("%w: the device at %s is %q, not %q", ErrInvalidOption, t.base, h.Device, dev)
	}
	if verify = t.c.verifyDevice(h.Device, body, sig); verify == nil && t.c.known != nil {
		p.Enrollment = EnrollmentEnrolled
	}
	return p, verify, nil
}

// job reads job id of device dev.
func (t *httpTransport) job(ctx context.Context, dev, id string) (record.Job, error) {
	var j record.Job
	body, sig, err := t.get(ctx, "/api/jobs/"+url.PathEscape(id), &j)
	if err != nil {
		return record.Job{}, err
	}
	if err := t.c.verifyDevice(dev, body, sig); err != nil {
		return record.Job{}, err
	}
	if t.c.known != nil && j.ID != id {
		return record.Job{}, fmt.Errorf("%w: %s answered for job %q, not %q", ErrImpostor, dev, j.ID, id)
	}
	return j, nil
}

// watch follows the SSE stream of a job; it retries until the job exists (the stream is
// opened before the envelope is sent).
func (t *httpTransport) watch(dev, id string) (<-chan wire.EventMsg, func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan wire.EventMsg, 256)
	go func() {
		defer close(ch)
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/api/jobs/"+url.PathEscape(id)+"/events", nil)
			res, err := t.client.Do(req)
			if err == nil && res.StatusCode == http.StatusOK {
				t.readSSE(res.Body, dev, id, ch)
				res.Body.Close()
				return
			}
			if res != nil {
				res.Body.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return ch, cancel, nil
}

// readSSE reads a job's SSE stream into ch until its final record. With known devices an
// event counts only in its signed form (wire.SSESignedField), signed by dev, for job id,
// in sequence; anything else is dropped with a warning.
func (t *httpTransport) readSSE(r io.Reader, dev, id string, ch chan<- wire.EventMsg) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event, signed, sig string
	lastSeq := 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, wire.SSESignedField+": "):
			signed = strings.TrimPrefix(line, wire.SSESignedField+": ")
		case strings.HasPrefix(line, wire.SSESignatureField+": "):
			sig = strings.TrimPrefix(line, wire.SSESignatureField+": ")
		case strings.HasPrefix(line, "data: "):
			m, ok := t.sseEvent(dev, id, event, []byte(strings.TrimPrefix(line, "data: ")), []byte(signed), sig, &lastSeq)
			event, signed, sig = "", "", ""
			if !ok {
				continue
			}
			ch <- m
			if m.Done {
				return
			}
		}
	}
}

// sseEvent turns one SSE event into the message it stands for, or reports it dropped.
func (t *httpTransport) sseEvent(dev, id, event string, data, signed []byte, sig string, lastSeq *int) (wire.EventMsg, bool) {
	if t.c.known == nil {
		if event == "done" {
			var j record.Job
			if json.Unmarshal(data, &j) != nil {
				return wire.EventMsg{}, false
			}
			return wire.EventMsg{JobID: id, Device: dev, Done: true, Job: &j}, true
		}
		var e record.Event
		if json.Unmarshal(data, &e) != nil {
			return wire.EventMsg{}, false
		}
		return wire.EventMsg{JobID: id, Device: dev, Event: &e}, true
	}
	var m wire.EventMsg
	err := t.c.verifyDevice(dev, signed, sig)
	if err == nil {
		if json.Unmarshal(signed, &m) != nil {
			err = fmt.Errorf("%w: %s signed an event that does not decode", ErrImpostor, dev)
		} else if m.JobID != id || m.Device != dev || m.Fleet != t.c.fleet || m.Seq <= *lastSeq || (m.Done && m.Job == nil) || (!m.Done && m.Event == nil) {
			err = fmt.Errorf("%w: event for job %s seq %d on job %s after seq %d", ErrImpostor, m.JobID, m.Seq, id, *lastSeq)
		}
	}
	if err != nil {
		t.c.log.Warn("dropping a job event", "device", dev, "job_id", id, "err", err)
		return wire.EventMsg{}, false
	}
	*lastSeq = m.Seq
	return m, true
}
