package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/cmd/internal/probe"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system"
	"github.com/fleetprov/fleetprov/core/system/dbus"
	"github.com/fleetprov/fleetprov/core/system/linuxhost"
	"github.com/fleetprov/fleetprov/core/system/podman"
	"github.com/fleetprov/fleetprov/core/system/simulate"
)

// deps are what tests inject into the binary; main passes the zero value.
type deps struct {
	// fault is called at pipeline step boundaries (the crash test kills the process there).
	fault func(point string)
}

// deviceFlags are the common flags of every command that touches the device.
type deviceFlags struct {
	stateDir, system, quadletDir, rootlessDir, appUser, hook, simulateFail, logFormat, logLevel string
	// host is --host (systemd, none or simulate; empty: systemd with --system dbus,
	// simulate with --system simulate), hostRoot --host-root.
	host, hostRoot string
	bridgePort     int
	// identityKey is --identity-key: the key serve signs with and every command opens
	// the device's secrets with (empty: STATE_DIR/identity_ed25519).
	identityKey string
	deps        deps
}

func (f *deviceFlags) register(fs *flag.FlagSet, defaultLevel string) {
	fs.StringVar(&f.stateDir, "state-dir", "/var/lib/fleetprov", "the device state directory (active config, jobs, lock)")
	fs.StringVar(&f.system, "system", "dbus", "system backend: dbus (real systemd) or simulate (records what it would do; for demos and tests)")
	fs.StringVar(&f.quadletDir, "quadlet-dir", "", "Quadlet dir for rootful units (default /etc/containers/systemd; with --system simulate, STATE_DIR/simulate-root/etc/containers/systemd)")
	fs.StringVar(&f.rootlessDir, "rootless-quadlet-dir", "", "Quadlet dir for rootless units (default ~APP_USER/.config/containers/systemd)")
	fs.StringVar(&f.host, "host", "", hostHelp)
	fs.StringVar(&f.hostRoot, "host-root", "", "the root host settings are written under (default /; with --host simulate, STATE_DIR/simulate-root)")
	fs.StringVar(&f.appUser, "app-user", config.DefaultAppUser, "the account rootless containers run as")
	fs.StringVar(&f.hook, "activation-hook", "", "executable run first during activation; non-zero exit fails the apply")
	fs.StringVar(&f.simulateFail, "simulate-fail", "", "with --system simulate: comma-separated services that fail (e.g. web.service)")
	fs.IntVar(&f.bridgePort, "bridge-port", config.DefaultBridgePort, "the HTTP bridge port, which WAN tcp must not open")
	fs.StringVar(&f.identityKey, "identity-key", "", identityKeyHelp)
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", defaultLevel, "log level: debug, info, warn or error")
}

func (f *deviceFlags) logger(stdio cli.IO) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, cli.Usagef("--log-level: %v", err)
	}
	o := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stdio.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stdio.Stderr, o)), nil
	}
	return nil, cli.Usagef("--log-format must be text or json, got %q", f.logFormat)
}

const hostHelp = `host settings backend: systemd applies users and SSH keys, networkd, nftables (table inet fleetprov),
timesyncd and dnsmasq, in the apply's transaction; none only writes the derived files into the
state dir (for images that apply them themselves); simulate records the changes and writes the
files under the simulate root (default: systemd with --system dbus, simulate with --system simulate)`

// backend builds the system backend the flags ask for.
func (f *deviceFlags) backend() (system.Backend, *simulate.Sim, error) {
	switch f.host {
	case "":
		f.host = map[string]string{"dbus": "systemd", "simulate": "simulate"}[f.system]
	case "systemd", "none", "simulate":
	default:
		return system.Backend{}, nil, cli.Usagef("--host must be systemd, none or simulate, got %q", f.host)
	}
	switch {
	case f.host == "systemd" && f.system != "dbus":
		return system.Backend{}, nil, cli.Usagef("--host systemd needs --system dbus (a simulated system with a real host is not a device)")
	case f.host == "simulate" && f.system != "simulate":
		return system.Backend{}, nil, cli.Usagef("--host simulate needs --system simulate")
	}
	switch f.system {
	case "dbus":
		be := dbus.New()
		be.Probes = probe.Real{}
		be.Secrets = podman.Secrets{}
		if f.host == "systemd" {
			be.Host = linuxhost.Host{}
		}
		return be, nil, nil
	case "simulate":
		fail := cli.SplitList(f.simulateFail)
		dirs := []string{f.quadletDir}
		if f.rootlessDir != "" {
			dirs = append(dirs, f.rootlessDir)
		}
		o := simulate.Options{Fail: fail, QuadletDirs: dirs, Home: filepath.Join(f.stateDir, "simulate-home", f.appUser)}
		if f.host == "simulate" {
			o.HostRoot = f.hostRoot
		}
		sim := simulate.New(o)
		return sim.Backend(), sim, nil
	}
	return system.Backend{}, nil, cli.Usagef("--system must be dbus or simulate, got %q", f.system)
}

// provisioner builds the pipeline for the flags.
func (f *deviceFlags) provisioner(log *slog.Logger) (*provision.Provisioner, *simulate.Sim, error) {
	abs, err := filepath.Abs(f.stateDir)
	if err != nil {
		return nil, nil, fmt.Errorf("--state-dir: %w", err)
	}
	f.stateDir = abs
	if f.quadletDir == "" {
		f.quadletDir = "/etc/containers/systemd"
		if f.system == "simulate" {
			f.quadletDir = filepath.Join(abs, "simulate-root", "etc", "containers", "systemd")
		}
	}
	if f.hostRoot == "" {
		f.hostRoot = "/"
		if f.system == "simulate" {
			f.hostRoot = filepath.Join(abs, "simulate-root")
		}
	}
	if f.system == "simulate" && f.rootlessDir == "" {
		f.rootlessDir = filepath.Join(abs, "simulate-home", f.appUser, ".config", "containers", "systemd")
	}
	be, sim, err := f.backend()
	if err != nil {
		return nil, nil, err
	}
	p := provision.New(provision.Options{
		State:       state.Dir{Root: abs},
		Backend:     be,
		Quadlet:     quadlet.Dirs{Rootful: f.quadletDir, Rootless: f.rootlessDir},
		AppUser:     f.appUser,
		Hook:        f.hook,
		HostRoot:    f.hostRoot,
		Config:      config.Options{BridgePort: f.bridgePort},
		IdentityKey: f.identityKey,
		Logger:      log,
		Fault:       f.deps.fault,
	})
	return p, sim, nil
}

func (f *deviceFlags) jobsDir() string { return filepath.Join(f.stateDir, "jobs") }

// openJobs runs recovery and opens the job history under the same lock.
func openJobs(ctx context.Context, p *provision.Provisioner, dir string, log *slog.Logger) (*jobs.Manager, state.Action, error) {
	var m *jobs.Manager
	act, err := p.Recover(ctx, func(act state.Action) error {
		var err error
		m, err = jobs.New(jobs.Options{Dir: dir, Recovered: string(act), Logger: log})
		return err
	})
	return m, act, err
}
