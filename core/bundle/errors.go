package bundle

import "errors"

var (
	// ErrTooLarge is returned when the compressed input or the decompressed total exceeds
	// its limit.
	ErrTooLarge = errors.New("bundle too large")
	// ErrTooManyMembers is returned when a bundle holds more members than allowed.
	ErrTooManyMembers = errors.New("too many bundle members")
	// ErrMemberTooLarge is returned when one member exceeds the per-member limit.
	ErrMemberTooLarge = errors.New("bundle member too large")
	// ErrUnsafePath is returned for absolute names, empty names, ".." components, or "."
	// used as a file.
	ErrUnsafePath = errors.New("unsafe bundle member path")
	// ErrUnsupportedMember is returned for symlinks, hardlinks, devices, FIFOs and other
	// non-regular members.
	ErrUnsupportedMember = errors.New("unsupported bundle member type")
	// ErrLayout is returned for members other than config.toml and files/..., and for
	// duplicates.
	ErrLayout = errors.New("unexpected bundle layout")
	// ErrNoConfig is returned when a bundle has no top-level config.toml.
	ErrNoConfig = errors.New("bundle has no config.toml")
	// ErrCorrupt is returned when the compressed stream or the tar structure is damaged or
	// truncated.
	ErrCorrupt = errors.New("corrupt bundle")
	// ErrUnsupportedFormat is returned for archives other than gzip or zstd compressed tar.
	ErrUnsupportedFormat = errors.New("unsupported input format")
	// ErrEmpty is returned for an empty input.
	ErrEmpty = errors.New("empty input")
)
