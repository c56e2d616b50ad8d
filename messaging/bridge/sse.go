package bridge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// events streams a job's events as Server-Sent Events: every event so far, then live ones,
// then `event: done` with the final record.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	j, ch, cancel, err := s.o.Service.WatchJob(id)
	if err != nil {
		return err
	}
	defer cancel()
	flusher, ok := w.(http.Flusher)
	if !ok {
		return errf(wire.ErrInternal, "streaming unsupported", nil)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Besides the data a browser reads, each event carries the message the device sends
	// over NATS (job id, device, fleet, sequence number) and its signature of it, in
	// fields EventSource ignores: `publisher --via` believes only those.
	svc := s.o.Service
	seq := 0
	send := func(event string, v any) {
		b, _ := json.Marshal(v)
		seq++
		m := wire.EventMsg{JobID: id, Device: svc.Device(), Fleet: svc.Fleet(), Seq: seq}
		if e, ok := v.(record.Event); ok {
			m.Event = &e
		} else if j, ok := v.(record.Job); ok {
			m.Done, m.Job = true, &j
		}
		if event != "" {
			fmt.Fprintf(w, "event: %s\n", event)
		}
		signed, _ := json.Marshal(m)
		if sig := svc.Sign(signed); sig != "" {
			fmt.Fprintf(w, "%s: %s\n%s: %s\n", wire.SSESignedField, signed, wire.SSESignatureField, sig)
		}
		fmt.Fprintf(w, "data: %s\n\n", b)
		flusher.Flush()
	}
	for _, e := range j.Events {
		send("", e)
	}
	if ch != nil {
		keepalive := time.NewTicker(15 * time.Second)
		defer keepalive.Stop()
	loop:
		for {
			select {
			case e, ok := <-ch:
				if !ok {
					break loop
				}
				send("", e)
			case <-keepalive.C:
				fmt.Fprint(w, ": keepalive\n\n")
				flusher.Flush()
			case <-r.Context().Done():
				return nil
			}
		}
	}
	final, err := s.o.Service.Job(id)
	if err != nil {
		final = j
	}
	send("done", final)
	return nil
}
