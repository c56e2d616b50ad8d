package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/record"
)

// ValidationResult is the --json form of a validation.
type ValidationResult struct {
	File     string         `json:"file"`
	Valid    bool           `json:"valid"`
	Errors   []config.Entry `json:"errors"`
	Warnings []config.Entry `json:"warnings"`
}

// PrintValidation writes the outcome of validating file: "valid" plus warnings, or every
// error, as text or JSON. It returns ErrReported (exit 1) when the config is invalid.
func PrintValidation(w io.Writer, file string, r config.Report, asJSON bool) error {
	res := ValidationResult{File: file, Valid: !r.Fatal(), Errors: r.Errors(), Warnings: r.Warnings()}
	if res.Errors == nil {
		res.Errors = []config.Entry{}
	}
	if res.Warnings == nil {
		res.Warnings = []config.Entry{}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("writing result: %w", err)
		}
	} else {
		if res.Valid {
			fmt.Fprintf(w, "%s: valid\n", file)
		} else {
			fmt.Fprintf(w, "%s: invalid (%d error(s))\n", file, len(res.Errors))
		}
		for _, e := range res.Errors {
			fmt.Fprintf(w, "  error: %s\n", e.Error())
		}
		for _, e := range res.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", e.Error())
		}
	}
	if !res.Valid {
		return Exit(ExitFailed, ErrReported)
	}
	return nil
}

// PrintEvent writes one job event as a line: elapsed time, step, service (mode), status,
// message. Both binaries print job progress with it.
func PrintEvent(w io.Writer, ev record.Event) {
	line := fmt.Sprintf("  %7.3fs  %-17s", ev.ElapsedSeconds, ev.Step)
	if ev.Service != "" {
		line += " " + ev.Service
		if ev.Mode != "" {
			line += " (" + ev.Mode + ")"
		}
	}
	if ev.Status != "" {
		line += " " + ev.Status
	}
	if ev.Message != "" {
		line += ": " + ev.Message
	}
	fmt.Fprintln(w, line)
}
