package device

import (
	"context"
	"encoding/json"
	"time"

	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// Presence is what a device announces and answers to ping.
type Presence struct {
	Device       string    `json:"device"`
	Fleet        string    `json:"fleet"`
	Groups       []string  `json:"groups"`
	Version      string    `json:"version"`
	Provisioned  bool      `json:"provisioned"`
	ConfigSHA256 string    `json:"config_sha256,omitempty"`
	LastJob      *JobRef   `json:"last_job,omitempty"`
	Busy         bool      `json:"busy"`
	Drift        bool      `json:"drift"`
	DriftFiles   []string  `json:"drift_files,omitempty"`
	Hub          *bool     `json:"hub_connected,omitempty"`
	Time         time.Time `json:"time"`
}

// JobRef summarizes a job.
type JobRef struct {
	ID             string     `json:"id"`
	Op             string     `json:"op"`
	State          jobs.State `json:"state"`
	Error          string     `json:"error,omitempty"`
	RollbackStatus string     `json:"rollback_status,omitempty"`
}

func (s *Service) presence() Presence {
	p := Presence{Device: s.o.Device, Fleet: s.o.Fleet, Groups: s.Groups(), Version: s.o.Version, Time: s.o.Now().UTC(),
		Busy: s.o.Jobs.Active() != ""}
	if p.Groups == nil {
		p.Groups = []string{}
	}
	if cur, err := s.o.Prov.Current(context.Background()); err == nil {
		p.Provisioned, p.ConfigSHA256 = cur.Provisioned, cur.Digest
		p.Drift, p.DriftFiles = len(cur.Drift) > 0, cur.Drift
	}
	if list := s.o.Jobs.List(); len(list) > 0 {
		j := list[0]
		p.LastJob = &JobRef{ID: j.ID, Op: j.Op, State: j.State, Error: j.Error, RollbackStatus: j.RollbackStatus}
	}
	if s.o.HubConnected != nil {
		up := s.o.HubConnected()
		p.Hub = &up
	}
	return p
}

func (s *Service) publishPresence() {
	b, _ := json.Marshal(s.presence())
	subj := subjects.Subject{Fleet: s.o.Fleet, Kind: subjects.Presence, Name: s.o.Device}.String()
	if err := s.o.Conn.Publish(subj, b); err != nil {
		s.log.Warn("publishing presence", "err", err)
	}
}

// EventMsg is what travels on fleetprov.<fleet>.evt.<device>.<job>: one job event, or the
// final record when Done.
type EventMsg struct {
	JobID  string      `json:"job_id"`
	Device string      `json:"device"`
	Event  *jobs.Event `json:"event,omitempty"`
	Done   bool        `json:"done,omitempty"`
	Job    *jobs.Job   `json:"job,omitempty"`
}

// publishEvents publishes a job's events as they happen and its final record, then
// refreshes the subscriptions (groups may have changed) and announces the new presence.
func (s *Service) publishEvents(id string, ch <-chan jobs.Event, cancel func()) {
	subj := subjects.Events(s.o.Fleet, s.o.Device, id)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		if ch != nil {
			for ev := range ch {
				b, _ := json.Marshal(EventMsg{JobID: id, Device: s.o.Device, Event: &ev})
				s.o.Conn.Publish(subj, b)
			}
		}
		if j, err := s.o.Jobs.Get(id); err == nil {
			b, _ := json.Marshal(EventMsg{JobID: id, Device: s.o.Device, Done: true, Job: &j})
			s.o.Conn.Publish(subj, b)
		}
		if err := s.resubscribe(); err != nil {
			s.log.Warn("refreshing subscriptions", "err", err)
		}
		s.publishPresence()
	}()
}
