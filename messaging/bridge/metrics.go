package bridge

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/record"
)

// Metrics are the worker's Prometheus metrics.
type Metrics struct {
	reg       *prometheus.Registry
	jobs      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	rollbacks *prometheus.CounterVec
	rejected  *prometheus.CounterVec
}

// NewMetrics registers the metrics in reg (a fresh registry when nil).
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		reg: reg,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetprov_jobs_total",
			Help: "Finished jobs by op and final state."}, []string{"op", "state"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetprov_job_duration_seconds",
			Help: "Job duration from start to finish.", Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, []string{"op"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetprov_rollbacks_total",
			Help: "Rollbacks by outcome (completed, failed, discarded)."}, []string{"status"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetprov_rejected_total",
			Help: "Refused requests by transport and code."}, []string{"transport", "code"}),
	}
	reg.MustRegister(m.jobs, m.duration, m.rollbacks, m.rejected, collectors.NewGoCollector())
	return m
}

// JobFinished records a finished job (wire it to jobs.Options.OnFinish).
func (m *Metrics) JobFinished(j record.Job) {
	m.jobs.WithLabelValues(j.Op, string(j.State)).Inc()
	if j.StartedAt != nil && j.FinishedAt != nil {
		m.duration.WithLabelValues(j.Op).Observe(j.FinishedAt.Sub(*j.StartedAt).Seconds())
	}
	if j.RollbackStatus != "" {
		m.rollbacks.WithLabelValues(string(j.RollbackStatus)).Inc()
	}
}

// Rejected counts a refused request.
func (m *Metrics) Rejected(transport, code string) { m.rejected.WithLabelValues(transport, code).Inc() }

func (m *Metrics) watchNonces(n *auth.Nonces) {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetprov_http_nonces",
		Help: "Outstanding HTTP nonces."}, func() float64 { return float64(n.Len()) })
	// A second bridge on the same registry (tests) keeps the first gauge.
	m.reg.Register(g)
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	promhttp.HandlerFor(s.o.Metrics.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}
