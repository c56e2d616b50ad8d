package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

func serveCommand(d deps) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Short: "run the device daemon: embedded NATS, device service, HTTP bridge",
		Long: `Runs crash recovery, starts the embedded NATS server (on --nats-listen, and as a
leafnode of --hub when given), answers signed provisioning requests on
fleetprov.<fleet>.dev.<device-id>.*, .grp.<group>.* and .all.*, and publishes job events
and presence. Tells systemd READY=1 and pings its watchdog when run as a notify service.
SIGTERM lets a running job finish (up to --shutdown-timeout) before exiting.

Standalone demo (no root, no systemd):
  worker serve --system simulate --state-dir /tmp/fleetprov-demo --device-id demo`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var df deviceFlags
			df.register(fs, "info")
			df.deps = d
			deviceID := fs.String("device-id", "", "this device's id (default: the contents of --machine-id-file)")
			machineID := fs.String("machine-id-file", "/etc/machine-id", "file whose contents are the default device id")
			fleetName := fs.String("fleet", "default", "fleet name (first token after fleetprov. in subjects)")
			groups := fs.String("groups", "", "comma-separated groups this device belongs to (the config's [fleet].groups are added)")
			natsListen := fs.String("nats-listen", "127.0.0.1:4222", "host:port of the embedded NATS server; 0.0.0.0:4222 opens it to the LAN; empty: in-process only. Clients must authenticate with the admin key <state-dir>/nats-admin.nk (root-only; publisher --creds); anonymous clients are refused")
			hub := fs.String("hub", "", "comma-separated hub leafnode URLs (nats-leaf://hub:7422, tls://hub:7422)")
			hubCreds := fs.String("hub-creds", "", "NATS creds file for the hub link")
			hubCA := fs.String("hub-ca", "", "PEM CA file for a TLS hub link")
			hubCompression := fs.String("hub-compression", "off", "S2 compression of the hub link: "+strings.Join(broker.HubCompressionModes, ", ")+
				" (the hub must allow it too). Off: provisioning messages are small and each compressed link costs the hub megabytes")
			trust := fs.String("fleet-trust", "/etc/fleetprov/allowed_signers", "fleet trust file baked into the image; when it exists, first-boot applies must be signed by it")
			window := fs.Duration("first-boot-window", 0, "close the first-boot routes (unsigned bridge and Boot UI, proof-of-possession signatures) this long after the device's first start; 0: open until provisioned. Production images should set it, or ship a fleet trust file")
			heartbeat := fs.Duration("heartbeat", 30*time.Second, "interval between presence heartbeats")
			shutdown := fs.Duration("shutdown-timeout", 60*time.Second, "how long SIGTERM waits for a running job")
			httpAddr := fs.String("http", ":8080", "address of the HTTP bridge (API + Boot UI); ignored when systemd passes a socket (LISTEN_FDS); empty disables it")
			httpHosts := fs.String("http-hosts", "", "comma-separated extra host names the Boot UI answers to (besides localhost, IP literals, *.local)")
			followLAN := fs.Bool("http-follow-lan", false, "after an apply, move the HTTP bridge to the config's LAN gateway address (same port); not with a systemd socket")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				if len(args) != 0 {
					return cli.Usagef("serve takes no arguments")
				}
				log, err := df.logger(stdio)
				if err != nil {
					return err
				}
				id := *deviceID
				if id == "" {
					b, err := os.ReadFile(*machineID)
					if err != nil {
						return cli.Usagef("no --device-id and cannot read %s: %v", *machineID, err)
					}
					id = strings.TrimSpace(string(b))
				}
				if !subjects.ValidToken(id) || !subjects.ValidToken(*fleetName) {
					return cli.Usagef("--device-id and --fleet must match ^[A-Za-z0-9_-]{1,64}$")
				}
				p, _, err := df.provisioner(log)
				if err != nil {
					return err
				}
				hubs := cli.SplitList(*hub)
				if _, err := broker.HubCompression(*hubCompression); err != nil {
					return cli.Usagef("--hub-compression %v", err)
				}
				if len(hubs) > 0 && *hubCreds != "" {
					if _, err := os.Stat(*hubCreds); errors.Is(err, os.ErrNotExist) {
						// The link retries with the file each time: it comes up once installed.
						log.Warn("no hub credentials yet: the hub link comes up once they are installed (publisher enroll --creds-out)",
							"hub_creds", *hubCreds)
					}
				}
				httpL, inherited, err := httpListener(*httpAddr)
				if err != nil {
					return err
				}
				n, err := node.Start(ctx, node.Options{
					HTTP: httpL, HTTPHosts: cli.SplitList(*httpHosts), HTTPFollowLAN: *followLAN && !inherited,
					Device: id, Fleet: *fleetName, Groups: cli.SplitList(*groups), Version: Version, Prov: p,
					Broker:         broker.Options{Listen: *natsListen, Hub: hubs, HubCreds: *hubCreds, HubCA: *hubCA, HubCompression: *hubCompression},
					FleetTrustFile: *trust, FirstBootWindow: *window, Config: config.Options{AppUser: df.appUser, BridgePort: df.bridgePort},
					HeartbeatInterval: *heartbeat, Logger: log,
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(stdio.Stdout, "worker %s serving fleet %q as device %q; NATS %s (credentials: %s); HTTP %s\nidentity %s\n", Version, *fleetName, id,
					orNone(n.Broker.ClientURL()), n.AdminKey, httpURL(n.HTTPAddr()), identity.Fingerprint(n.Identity.PublicKey()))
				daemon.SdNotify(false, daemon.SdNotifyReady)
				stopWatchdog := watchdog(ctx)
				<-ctx.Done()
				stopWatchdog()
				daemon.SdNotify(false, daemon.SdNotifyStopping)
				log.Info("shutting down", "grace", *shutdown)
				sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
				defer cancel()
				if err := n.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					return err
				}
				return nil
			}
		},
	}
}

// httpListener takes the socket systemd passed (socket activation; inherited is true), or
// listens on addr.
func httpListener(addr string) (l net.Listener, inherited bool, err error) {
	ls, err := activation.Listeners()
	if err == nil && len(ls) > 0 && ls[0] != nil {
		for _, extra := range ls[1:] {
			if extra != nil {
				extra.Close()
			}
		}
		return ls[0], true, nil
	}
	if addr == "" {
		return nil, false, nil
	}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("HTTP bridge: %w", err)
	}
	return l, false, nil
}

func httpURL(addr string) string {
	if addr == "" {
		return "(disabled)"
	}
	return "http://" + addr
}

// watchdog pings systemd's watchdog at half its interval while the process runs.
func watchdog(ctx context.Context) func() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			case <-wctx.Done():
				return
			}
		}
	}()
	return cancel
}

func orNone(s string) string {
	if s == "" {
		return "(in-process only)"
	}
	return s
}
