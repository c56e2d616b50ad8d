package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
)

// Commit-confirm: an apply that changes network or firewall settings keeps the previous
// state (rollback dir and promotion marker) until the device proves it is still
// reachable, within activation.confirm_seconds, or rolls back by itself. The wait is
// recorded in confirmFile, so a worker restart resumes it (with the time left) and a
// reboot, or a deadline that passed while the worker was down, rolls back at start.

const confirmFile = "confirm-pending.json"

// DefaultBootIDFile is where the kernel tells this boot apart from the last.
const DefaultBootIDFile = "/proc/sys/kernel/random/boot_id"

var (
	// ErrNotConfirmed is returned when a network change was not confirmed in time.
	ErrNotConfirmed = errors.New("network change not confirmed")
	// ErrNoHub is what a Reach function returns when the device has no hub: with
	// confirm = "auto" there is then nothing to prove.
	ErrNoHub = errors.New("no hub configured")
	// ErrNothingToConfirm is returned by Confirm when no network change awaits one.
	ErrNothingToConfirm = errors.New("no network change awaits confirmation")
	// ErrAwaitingConfirm refuses an apply while a network change awaits confirmation.
	ErrAwaitingConfirm = errors.New("a network change awaits confirmation")
	// errConfirmInterrupted: the worker stopped inside the window; it stays open.
	errConfirmInterrupted = errors.New("interrupted while a network change awaits confirmation")
)

// ActionAwaitingConfirm is the recovery action of a start inside a confirm window: the
// state is left as it is, and ResumeConfirm waits for the rest of the window.
const ActionAwaitingConfirm state.Action = "awaiting-confirm"

// Reach proves the device is reachable: nil after a round trip through its hub, ErrNoHub
// when it has none, another error when this try failed.
type Reach func(ctx context.Context) error

type pendingConfirm struct {
	Mode     string    `json:"mode"`
	Deadline time.Time `json:"deadline"`
	BootID   string    `json:"boot_id"`
	Initial  bool      `json:"initial"` // an initial apply: a failure discards it
}

// SetReach sets how the device proves it is reachable through its hub (the messaging
// layer knows; core does not).
func (p *Provisioner) SetReach(r Reach) {
	p.confirmMu.Lock()
	defer p.confirmMu.Unlock()
	p.reach = r
}

// SetRelink sets how the device drops its hub link so that it is dialled again: once at
// the start of an auto confirm window, since a link made before the change may ride on
// an address the change removed (TCP would notice only after minutes of unanswered
// pings), and the proof must come over the network as it is now.
func (p *Provisioner) SetRelink(fn func() int) {
	p.confirmMu.Lock()
	defer p.confirmMu.Unlock()
	p.relink = fn
}

func (p *Provisioner) currentReach() Reach {
	p.confirmMu.Lock()
	defer p.confirmMu.Unlock()
	return p.reach
}

// Confirm confirms the network change that awaits confirmation (a signed confirm op).
func (p *Provisioner) Confirm() error { return p.confirm(false) }

// ConfirmOperator confirms only a window that waits for an operator (activation.confirm
// = "operator"): one the hub link confirms is not confirmed by hand.
func (p *Provisioner) ConfirmOperator() error { return p.confirm(true) }

func (p *Provisioner) confirm(operatorOnly bool) error {
	p.confirmMu.Lock()
	defer p.confirmMu.Unlock()
	if p.confirmed == nil {
		return ErrNothingToConfirm
	}
	if operatorOnly && p.confirmMode != config.ConfirmOperator {
		return fmt.Errorf("%w: this change is confirmed by the hub link answering again, not by hand", ErrNothingToConfirm)
	}
	select {
	case <-p.confirmed:
	default:
		close(p.confirmed)
	}
	return nil
}

// AwaitingConfirm reports the mode and deadline of the confirmation a network change
// waits for (ok false when none).
func (p *Provisioner) AwaitingConfirm() (mode string, deadline time.Time, ok bool) {
	pc, err := p.readPending()
	if err != nil || pc == nil {
		return "", time.Time{}, false
	}
	return pc.Mode, pc.Deadline, true
}

func (p *Provisioner) bootID() string {
	f := p.opts.BootIDFile
	if f == "" {
		f = DefaultBootIDFile
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (p *Provisioner) pendingPath() string { return filepath.Join(p.opts.State.Root, confirmFile) }

func (p *Provisioner) readPending() (*pendingConfirm, error) {
	b, err := os.ReadFile(p.pendingPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pc pendingConfirm
	if err := json.Unmarshal(b, &pc); err != nil {
		return nil, fmt.Errorf("reading %s: %w", confirmFile, err)
	}
	return &pc, nil
}

func (p *Provisioner) dropPending() error {
	if err := os.Remove(p.pendingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return state.SyncDir(p.opts.State.Root)
}

// confirm is the apply stage after a healthy activation: with a network change and a
// confirm policy, it waits for the proof; without the proof the apply fails and rolls
// back.
func (a *applyRun) confirm(ctx context.Context) error {
	pol := a.model.Activation
	if a.hostPlan == nil || !a.hostPlan.Network() || pol.Confirm == config.ConfirmNone {
		return nil
	}
	p := a.p
	reach := p.currentReach()
	if pol.Confirm == config.ConfirmAuto {
		switch {
		case reach == nil || errors.Is(a.reachBefore, ErrNoHub):
			a.emit(record.Event{Step: "confirm", Status: "skipped", Message: "network changed; no hub to prove the device is reachable through"})
			return nil
		case a.reachBefore != nil:
			// Nothing to compare with: the hub gave no round trip before the change either
			// (a hub without JetStream, or no durable push yet made the fleet's bucket).
			a.emit(record.Event{Step: "confirm", Status: "skipped", Message: "network changed; the hub answered no round trip before the change either (" +
				a.reachBefore.Error() + "), so it cannot prove the change: set activation.confirm = \"operator\" to gate it"})
			return nil
		}
	}
	pc := pendingConfirm{Mode: pol.Confirm, Deadline: time.Now().Add(time.Duration(pol.ConfirmSeconds) * time.Second).UTC(),
		BootID: p.bootID(), Initial: !a.res.Reapply}
	b, _ := json.Marshal(pc)
	p.openWindow(pc.Mode)
	if err := state.WriteFileAtomic(p.pendingPath(), b, 0o600); err != nil {
		p.closeWindow()
		return fmt.Errorf("recording the confirm window: %w", err)
	}
	p.fault("confirm:pending")
	return p.waitConfirm(ctx, pc, a.emit)
}

// openWindow opens the in-memory window a confirmation closes (or returns the open one).
// It opens before the pending record is written, and when recovery finds one, so that a
// confirmation that comes as soon as the record exists is never lost.
func (p *Provisioner) openWindow(mode string) chan struct{} {
	p.confirmMu.Lock()
	defer p.confirmMu.Unlock()
	if p.confirmed == nil {
		p.confirmed = make(chan struct{})
	}
	p.confirmMode = mode
	return p.confirmed
}

func (p *Provisioner) closeWindow() {
	p.confirmMu.Lock()
	defer p.confirmMu.Unlock()
	p.confirmed, p.confirmMode = nil, ""
}

// waitConfirm waits for the proof pc asks for until its deadline. Either way the pending
// record goes: on success the caller commits, on failure it rolls back.
func (p *Provisioner) waitConfirm(ctx context.Context, pc pendingConfirm, emit func(record.Event)) error {
	what := "a round trip through the hub"
	if pc.Mode == config.ConfirmOperator {
		what = "an operator's signed confirm (publisher confirm --device ...)"
	}
	left := time.Until(pc.Deadline).Round(time.Second)
	// Service names the mode, so the Boot UI knows to offer its confirm button.
	emit(record.Event{Step: "confirm", Service: pc.Mode, Status: "waiting", Message: fmt.Sprintf("network changed: waiting up to %s for %s", left, what)})
	confirmed := p.openWindow(pc.Mode)
	defer p.closeWindow()
	p.confirmMu.Lock()
	reach, relink := p.reach, p.relink
	p.confirmMu.Unlock()
	if pc.Mode == config.ConfirmAuto && reach != nil && relink != nil {
		p.log.Info("network changed: dialling the hub link again over the new settings", "closed", relink())
	}
	wctx, cancel := context.WithDeadline(ctx, pc.Deadline)
	defer cancel()
	start := time.Now()
	var last error
	for {
		if pc.Mode == config.ConfirmAuto && reach != nil {
			if last = reach(wctx); last == nil {
				break
			}
		}
		poll := time.NewTimer(p.confirmPoll())
		select {
		case <-confirmed:
			poll.Stop()
			last = nil
		case <-wctx.Done():
			poll.Stop()
			if ctx.Err() != nil {
				return fmt.Errorf("%w: %w", errConfirmInterrupted, ctx.Err())
			}
			if derr := p.dropPending(); derr != nil {
				p.log.Error("dropping the confirm record", "err", derr)
			}
			why := fmt.Sprintf("%s did not come within %ds", what, int(pc.Deadline.Sub(start).Round(time.Second).Seconds()))
			if last != nil {
				why += " (last try: " + last.Error() + ")"
			}
			return fmt.Errorf("%w: %s", ErrNotConfirmed, why)
		case <-poll.C:
			continue
		}
		break
	}
	if err := p.dropPending(); err != nil {
		return err
	}
	emit(record.Event{Step: "confirm", Status: "confirmed", Message: fmt.Sprintf("confirmed after %s", time.Since(start).Round(100*time.Millisecond))})
	return nil
}

// confirmPoll is how often reach is tried: the poll interval, at least a second.
func (p *Provisioner) confirmPoll() time.Duration { return max(p.opts.PollInterval, time.Second) }

// recoverPending runs at start, under the lock, before state recovery. Inside its window
// and on the same boot, a network change is left awaiting confirmation (ResumeConfirm
// waits for the rest); after a reboot or past its deadline it is undone: its record goes,
// an initial apply is discarded, and state recovery restores the previous state (the
// marker and rollback are still there).
// recoverState runs state recovery, unless a network change awaits confirmation (after a
// worker restart): that change keeps its rollback, and recovery must not run under it
// (ErrAwaitingConfirm).
func (p *Provisioner) recoverState() (state.Action, error) {
	pc, err := p.readPending()
	if err != nil {
		return state.ActionNone, err
	}
	if pc != nil {
		return state.ActionNone, fmt.Errorf("%w (%s, until %s): confirm it or let it roll back first",
			ErrAwaitingConfirm, pc.Mode, pc.Deadline.Format(time.RFC3339))
	}
	return p.opts.State.Recover(p.log)
}

func (p *Provisioner) recoverPending() (act state.Action, handled bool, err error) {
	pc, err := p.readPending()
	if err != nil || pc == nil {
		return state.ActionNone, false, err
	}
	boot := p.bootID()
	if pc.BootID == boot && time.Now().Before(pc.Deadline) {
		p.log.Warn("a network change awaits confirmation", "mode", pc.Mode, "deadline", pc.Deadline)
		p.openWindow(pc.Mode)
		return ActionAwaitingConfirm, true, nil
	}
	why := "its confirm window closed while the worker was down"
	if pc.BootID != boot {
		why = "the device rebooted before it was confirmed"
	}
	p.log.Warn("rolling back an unconfirmed network change: "+why, "deadline", pc.Deadline)
	if pc.Initial {
		if err := p.opts.State.Discard(); err != nil {
			return state.ActionNone, true, err
		}
		if err := p.dropPending(); err != nil {
			return state.ActionNone, true, err
		}
		return state.ActionDiscarded, true, nil
	}
	if err := p.dropPending(); err != nil {
		return state.ActionNone, true, err
	}
	return state.ActionNone, false, nil // state recovery restores the rollback
}

// ResumeConfirm waits for the rest of a confirm window a restart interrupted (after
// Recover said ActionAwaitingConfirm and SetReach gave the proof), then commits the
// change or rolls it back. It returns at once when nothing awaits confirmation.
func (p *Provisioner) ResumeConfirm(ctx context.Context, emit func(record.Event)) error {
	if emit == nil {
		emit = func(record.Event) {}
	}
	unlock, err := p.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	pc, err := p.readPending()
	if err != nil || pc == nil {
		return err
	}
	err = p.waitConfirm(ctx, *pc, emit)
	if err == nil {
		return p.opts.State.Commit()
	}
	if errors.Is(err, errConfirmInterrupted) {
		return nil
	}
	a := &applyRun{p: p, emit: emit, unlock: func() {}, promoted: true, res: Result{Reapply: !pc.Initial}}
	a.fail(ctx, err)
	return err
}
