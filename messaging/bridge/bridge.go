// Package bridge is the device's HTTP transport, a thin adapter over the transport-neutral
// device service (messaging/device): signed requests with single-use nonces, partial
// updates, export, SSE job events, envelopes posted by `publisher --via`, the OpenAPI
// document, Prometheus metrics, and the first-boot Boot UI. Every route ends in a
// device.Service call, and every error in device.FromError; it never imports the NATS
// transport.
package bridge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/messaging/device"
	"golang.org/x/time/rate"
)

// Options configure the bridge.
type Options struct {
	Service *device.Service
	Nonces  *auth.Nonces
	Metrics *Metrics
	// MaxBody is the upload limit (default 32 MiB, the bundle limit).
	MaxBody int64
	// MaxUploads bounds the bodies being received at once (default DefaultMaxUploads).
	MaxUploads int
	// SpoolDir receives request bodies (the state dir; default os.TempDir()).
	SpoolDir string
	// Hosts are extra names the Boot UI answers to (besides localhost, IP literals and
	// *.local).
	Hosts  []string
	Logger *slog.Logger
}

// Server serves the bridge.
type Server struct {
	o         Options
	uploads   chan struct{}
	uploadMu  sync.Mutex
	uploaders map[string]bool // clients with an upload in progress
	log       *slog.Logger
	refusals  *rate.Limiter // "request refused" log lines
	csrf      string
	mux       *http.ServeMux
	// uiJob and uiToken are the first-boot job the Boot UI started and the form token of
	// the browser that started it: only that browser may confirm its network change.
	uiMu           sync.Mutex
	uiJob, uiToken string
}

// New builds the server and its routes.
func New(o Options) *Server {
	if o.MaxBody <= 0 {
		o.MaxBody = bundle.DefaultMaxCompressed
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Nonces == nil {
		o.Nonces = &auth.Nonces{}
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.MaxUploads <= 0 {
		o.MaxUploads = DefaultMaxUploads
	}
	s := &Server{o: o, log: o.Logger.With("component", "bridge"), refusals: rate.NewLimiter(refusalLogRate, 2*refusalLogRate), csrf: newToken(), mux: http.NewServeMux(),
		uploads: make(chan struct{}, o.MaxUploads), uploaders: map[string]bool{}}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern, s.wrap(rt.handle))
	}
	s.o.Metrics.watchNonces(o.Nonces)
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// route is one API route; the OpenAPI document is checked against this list.
type route struct {
	pattern string
	handle  func(w http.ResponseWriter, r *http.Request) error
}

func (s *Server) routes() []route {
	return []route{
		{"GET /api/health", s.health},
		{"GET /api/nonce", s.nonce},
		{"POST /api/config", s.postConfig},
		{"POST /api/validate", s.validate},
		{"GET /api/config/current", s.current},
		{"GET /api/config/export", s.export},
		{"PUT /api/config/users/{name}", s.keyed("users")},
		{"DELETE /api/config/users/{name}", s.keyed("users")},
		{"PATCH /api/config/network", s.merge("network")},
		{"PUT /api/config/containers/{name}", s.keyed("containers")},
		{"DELETE /api/config/containers/{name}", s.keyed("containers")},
		{"PUT /api/config/container-networks/{name}", s.keyed("container-networks")},
		{"DELETE /api/config/container-networks/{name}", s.keyed("container-networks")},
		{"PUT /api/config/container-volumes/{name}", s.keyed("container-volumes")},
		{"DELETE /api/config/container-volumes/{name}", s.keyed("container-volumes")},
		{"PUT /api/config/container-builds/{name}", s.keyed("container-builds")},
		{"DELETE /api/config/container-builds/{name}", s.keyed("container-builds")},
		{"PATCH /api/config/activation", s.merge("activation")},
		{"POST /api/envelopes", s.envelope},
		{"GET /api/jobs/{id}", s.job},
		{"GET /api/jobs/{id}/events", s.events},
		{"GET /api/openapi.json", s.openapi},
		{"GET /metrics", s.metrics},
		{"GET /{$}", s.uiIndex},
		{"POST /apply", s.uiApply},
		{"POST /confirm", s.uiConfirm},
	}
}

// wrap turns a handler that returns an error into an http.Handler, with the one error
// mapping.
func (s *Server) wrap(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func (s *Server) reject(code string) { s.o.Metrics.Rejected("http", code) }

// refusalLogRate bounds the "request refused" log lines per second: a flood of bad
// requests is counted in the metrics, not written to the journal line by line.
const refusalLogRate = 10

// ReadTimeout bounds reading a whole request, body included: 32 MiB at 300 KB/s.
const ReadTimeout = 2 * time.Minute

// Serve serves on l until ctx ends, then shuts down gracefully (10s).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	// Header, body and idle timeouts bound what a stalled client holds. There is no write
	// timeout: job event streams (SSE) stay open while a job runs.
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: ReadTimeout,
		IdleTimeout: 60 * time.Second, MaxHeaderBytes: 64 << 10, BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if errors.Is(err, context.DeadlineExceeded) {
			srv.Close()
		}
		<-errc
		return nil
	}
}
