package config

import "errors"

var (
	// ErrInvalid is returned by Parse when the Report holds at least one error.
	ErrInvalid = errors.New("invalid config")
	// ErrUnsupportedVersion is returned by Parse when version is an integer other than 1.
	ErrUnsupportedVersion = errors.New("unsupported config version")
	// ErrEmpty is returned by Parse when the input holds no TOML keys at all.
	ErrEmpty = errors.New("empty config")
)
