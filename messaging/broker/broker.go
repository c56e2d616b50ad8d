// Package broker runs the worker's embedded NATS server (github.com/nats-io/nats-server/v2)
// in-process: a device works alone on first boot, and with --hub the same server dials the
// fleet's hub as a leafnode, reconnecting forever while local clients keep working. The
// worker talks to it through an in-process connection.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Options configure the embedded server. Zero values are the documented defaults.
type Options struct {
	// Name is the server name (the device id).
	Name string
	// Listen is host:port for NATS clients (port -1: random); "" serves in-process only.
	Listen string
	// LeafListen is host:port accepting leafnode connections (a hub); "" disables it.
	LeafListen string
	// Hub lists the hub URLs dialled as one leafnode remote (nats-leaf://host:7422,
	// tls://host:7422; user:password@ in the URL is used for auth).
	Hub []string
	// HubCreds is a NATS creds file (JWT + nkey) for the leaf link.
	HubCreds string
	// HubCA is a PEM file of CAs trusted for a TLS leaf link (default: system roots).
	HubCA string
	// HubCompression is the hub link's S2 compression: "off" (default), "accept",
	// "s2_auto", "s2_uncompressed", "s2_fast", "s2_better" or "s2_best". Off because
	// provisioning traffic is small (configs, events; bundles are zstd already) while
	// each compressed link costs both ends megabytes of buffers: 1,000 compressed links
	// took the hub 5–8 GB.
	HubCompression string
	// ReconnectInterval between leaf link attempts (default 2s; it retries forever).
	ReconnectInterval time.Duration
	// StoreDir enables JetStream with this store directory.
	StoreDir string
	// MaxPayload overrides the NATS max payload (default 1 MiB).
	MaxPayload int32
	// ReadyTimeout bounds the start (default 10s).
	ReadyTimeout time.Duration
	// Users, when set, are the only clients accepted: each proves one of these user nkeys
	// (U...) by signing the server's nonce, and has every permission. The in-process
	// connection gets a key of its own, made in memory at each start. Without Users and
	// ConfigFile, clients are anonymous (a hub in tests).
	Users []string
	// ConfigFile loads the server's options from a nats-server configuration file, such as
	// the hub.conf of 'publisher nats init' (operator mode); Listen and LeafListen, when
	// set, replace its listen addresses.
	ConfigFile string
	Logger     *slog.Logger
}

// Broker is a running embedded server.
type Broker struct {
	srv  *server.Server
	opts *server.Options
	log  *slog.Logger
	lg   *logAdapter
	self nkeys.KeyPair // the in-process connection's key, with Auth
}

// Start starts the server and waits until it accepts connections. Any setup error, or a
// server that is not ready in time, is returned; nothing is left running then.
func Start(ctx context.Context, o Options) (*Broker, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 10 * time.Second
	}
	if o.ReconnectInterval <= 0 {
		o.ReconnectInterval = 2 * time.Second
	}
	so := &server.Options{}
	if o.ConfigFile != "" {
		var err error
		if so, err = server.ProcessConfigFile(o.ConfigFile); err != nil {
			return nil, fmt.Errorf("NATS configuration %s: %w", o.ConfigFile, err)
		}
	}
	so.NoSigs = true
	if o.Name != "" {
		so.ServerName = o.Name
	}
	if o.MaxPayload != 0 {
		so.MaxPayload = o.MaxPayload
	}
	var self nkeys.KeyPair
	if len(o.Users) > 0 {
		var err error
		if self, err = nkeys.CreateUser(); err != nil {
			return nil, fmt.Errorf("creating the in-process key: %w", err)
		}
		pub, _ := self.PublicKey()
		so.Nkeys = []*server.NkeyUser{{Nkey: pub, AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeInProcess: {}}}}
		for _, u := range o.Users {
			if !nkeys.IsValidPublicUserKey(u) {
				return nil, fmt.Errorf("NATS user %q is not a user public key (U...)", u)
			}
			so.Nkeys = append(so.Nkeys, &server.NkeyUser{Nkey: u})
		}
	}
	switch {
	case o.Listen == "" && o.ConfigFile == "":
		so.DontListen = true
	case o.Listen != "":
		host, port, err := splitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("client listen address: %w", err)
		}
		so.Host, so.Port = host, port
	}
	if o.LeafListen != "" {
		host, port, err := splitHostPort(o.LeafListen)
		if err != nil {
			return nil, fmt.Errorf("leafnode listen address: %w", err)
		}
		so.LeafNode.Host, so.LeafNode.Port = host, port
	}
	if len(o.Hub) > 0 {
		// A device asks the hub not to send it other leafnodes' interest: it needs only its
		// own subjects and the operators' inboxes, and without this every device gets the
		// whole fleet's interest graph (1,000 devices: 4.3 k link churns, 17.9 GB).
		mode, err := HubCompression(o.HubCompression)
		if err != nil {
			return nil, fmt.Errorf("hub link compression %w", err)
		}
		remote := &server.RemoteLeafOpts{Credentials: o.HubCreds, RequestIsolation: true,
			Compression: server.CompressionOpts{Mode: mode}}
		for _, h := range o.Hub {
			u, err := url.Parse(h)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("hub URL %q: expected e.g. nats-leaf://hub:7422", h)
			}
			if u.Scheme == "tls" {
				remote.TLS = true
			}
			remote.URLs = append(remote.URLs, u)
		}
		if remote.TLS || o.HubCA != "" {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if o.HubCA != "" {
				pem, err := os.ReadFile(o.HubCA)
				if err != nil {
					return nil, fmt.Errorf("reading hub CA: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("hub CA %s holds no certificate", o.HubCA)
				}
				cfg.RootCAs = pool
			}
			remote.TLS, remote.TLSConfig = true, cfg
		}
		so.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
		so.LeafNode.ReconnectInterval = o.ReconnectInterval
	}
	if o.StoreDir != "" {
		so.JetStream, so.StoreDir = true, o.StoreDir
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("configuring NATS server: %w", err)
	}
	lg := &logAdapter{log: o.Logger.With("component", "nats")}
	srv.SetLoggerV2(lg, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(o.ReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		if err := lg.fatal(); err != nil {
			return nil, fmt.Errorf("starting NATS server: %w", err)
		}
		return nil, fmt.Errorf("starting NATS server: not ready within %s", o.ReadyTimeout)
	}
	if err := lg.fatal(); err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("starting NATS server: %w", err)
	}
	return &Broker{srv: srv, opts: so, log: o.Logger, lg: lg, self: self}, nil
}

// Connect opens an in-process client connection (no socket).
func (b *Broker) Connect(opts ...nats.Option) (*nats.Conn, error) {
	// In-process reconnects are cheap: if the server ever cuts the worker off (a flood
	// past its max pending), it is back within a quarter second, subscriptions restored.
	// Asynchronous errors (a subscription dropping a flood past its pending limits) go to
	// the log at the 1st, 2nd, 4th, 8th, … occurrence, not to stderr once per message.
	var asyncErrs atomic.Int64
	onErr := func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if n := asyncErrs.Add(1); n&(n-1) == 0 {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			b.log.Warn("worker's NATS connection", "subject", subj, "err", err, "occurrences", n)
		}
	}
	opts = append([]nats.Option{nats.InProcessServer(b.srv), nats.Name("fleetprov-worker"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond), nats.ErrorHandler(onErr)}, opts...)
	if b.self != nil {
		pub, _ := b.self.PublicKey()
		opts = append(opts, nats.Nkey(pub, b.self.Sign))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting in-process: %w", err)
	}
	return nc, nil
}

// ClientURL returns the client listener's URL ("" when in-process only).
func (b *Broker) ClientURL() string {
	if b.srv.Addr() == nil {
		return ""
	}
	return b.srv.ClientURL()
}

// LeafURL returns nats-leaf://host:port of the leafnode listener ("" when disabled).
func (b *Broker) LeafURL() string {
	// The server writes the port it bound back into its options (port -1 = random).
	if b.opts.LeafNode.Port <= 0 {
		return ""
	}
	host := b.opts.LeafNode.Host
	if host == "" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return "nats-leaf://" + net.JoinHostPort(host, strconv.Itoa(b.opts.LeafNode.Port))
}

// LeafNodes returns the number of leafnode connections (for a device: 1 when its hub link
// is up; for a hub: the connected devices).
func (b *Broker) LeafNodes() int { return b.srv.NumLeafNodes() }

// SlowConsumers counts the connections this server has cut off or dropped messages for
// because they did not read fast enough.
func (b *Broker) SlowConsumers() int64 {
	v, err := b.srv.Varz(nil)
	if err != nil {
		return 0
	}
	return v.SlowConsumers
}

// Relink closes the leafnode links this server dialled (a device's link to its hub; a
// hub's accepted links are never touched), which it dials again after its reconnect
// interval. After a change of the device's own addresses a link may ride on an address
// that is gone: TCP would notice only after minutes of unanswered pings. It returns how
// many links it closed.
func (b *Broker) Relink() int {
	lz, err := b.srv.Leafz(nil)
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range lz.Leafs {
		if l.IsSpoke && b.srv.DisconnectClientByID(l.ID) == nil {
			n++
		}
	}
	return n
}

// Err returns the fatal error the server reported, if any.
func (b *Broker) Err() error { return b.lg.fatal() }

// Shutdown stops the server and waits for it.
func (b *Broker) Shutdown() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}

func splitHostPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = -1 // nats-server's RANDOM_PORT
	}
	return host, port, nil
}

// logAdapter routes nats-server logs to slog. Fatalf never exits the process: it logs at
// Error and records the failure for Start and Err to return.
type logAdapter struct {
	log *slog.Logger
	mu  sync.Mutex
	err error
}

func (l *logAdapter) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *logAdapter) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *logAdapter) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *logAdapter) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *logAdapter) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *logAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	l.mu.Lock()
	if l.err == nil {
		l.err = errors.New(msg)
	}
	l.mu.Unlock()
}

func (l *logAdapter) fatal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// HubCompressionModes are the values HubCompression takes ("" is "off").
var HubCompressionModes = []string{server.CompressionOff, server.CompressionAccept, server.CompressionS2Auto,
	server.CompressionS2Uncompressed, server.CompressionS2Fast, server.CompressionS2Better, server.CompressionS2Best}

// HubCompression checks a HubCompression value and returns the mode it stands for.
func HubCompression(m string) (string, error) {
	if m == "" {
		return server.CompressionOff, nil
	}
	if !slices.Contains(HubCompressionModes, m) {
		return "", fmt.Errorf("%q: expected one of %s", m, strings.Join(HubCompressionModes, ", "))
	}
	return m, nil
}
