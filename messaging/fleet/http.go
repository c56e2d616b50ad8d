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
type httpTransport struct {
	base   string
	client *http.Client
}

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
	c.http = &httpTransport{base: strings.TrimSuffix(base, "/"), client: &http.Client{}}
	return c, nil
}

func (t *httpTransport) get(ctx context.Context, path string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.base+path, nil)
	res, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoReply, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return replyError(res)
	}
	return json.NewDecoder(res.Body).Decode(v)
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

// send posts a signed envelope and decodes the reply (refusals too).
func (t *httpTransport) send(ctx context.Context, raw []byte, sig string, timeout time.Duration) (wire.Reply, error) {
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
	if res.StatusCode == http.StatusOK || res.StatusCode == http.StatusAccepted {
		var r wire.Reply
		if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
			return r, fmt.Errorf("decoding reply: %w", err)
		}
		return r, nil
	}
	return wire.Refuse("", replyError(res)), nil
}

func (t *httpTransport) ping(ctx context.Context) (wire.Presence, error) {
	var h struct {
		Device      string `json:"device"`
		Fleet       string `json:"fleet"`
		Version     string `json:"version"`
		Provisioned bool   `json:"provisioned"`
	}
	if err := t.get(ctx, "/api/health", &h); err != nil {
		return wire.Presence{}, err
	}
	return wire.Presence{Device: h.Device, Fleet: h.Fleet, Version: h.Version, Provisioned: h.Provisioned, Groups: []string{}}, nil
}

func (t *httpTransport) job(ctx context.Context, id string) (record.Job, error) {
	var j record.Job
	err := t.get(ctx, "/api/jobs/"+url.PathEscape(id), &j)
	return j, err
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
				readSSE(res.Body, dev, id, ch)
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

func readSSE(r io.Reader, dev, id string, ch chan<- wire.EventMsg) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			if event == "done" {
				var j record.Job
				if json.Unmarshal(data, &j) == nil {
					ch <- wire.EventMsg{JobID: id, Device: dev, Done: true, Job: &j}
				}
				return
			}
			var e record.Event
			if json.Unmarshal(data, &e) == nil {
				ch <- wire.EventMsg{JobID: id, Device: dev, Event: &e}
			}
			event = ""
		}
	}
}
