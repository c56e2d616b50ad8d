package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Format is what an input turned out to be; the magic bytes decide, never the file name.
type Format int

// Formats.
const (
	FormatTOML Format = iota
	FormatGzip
	FormatZstd
)

func (f Format) String() string {
	switch f {
	case FormatGzip:
		return "tar.gz"
	case FormatZstd:
		return "tar.zst"
	}
	return "toml"
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Detect returns the format of an input from its first bytes.
func Detect(head []byte) Format {
	switch {
	case bytes.HasPrefix(head, zstdMagic):
		return FormatZstd
	case bytes.HasPrefix(head, gzipMagic):
		return FormatGzip
	}
	return FormatTOML
}

// Limits bound what one input may cost. Zero fields take the defaults.
type Limits struct {
	MaxCompressed int64 // the input as received (default 32 MiB)
	MaxTotal      int64 // all members decompressed (default 256 MiB)
	MaxMembers    int   // entries, directories included (default 4096)
	MaxMember     int64 // one member (default 64 MiB)
}

// Default limits (DESIGN.md "Numbers that are part of the contract").
const (
	DefaultMaxCompressed = 32 << 20
	DefaultMaxTotal      = 256 << 20
	DefaultMaxMembers    = 4096
	DefaultMaxMember     = 64 << 20
	// maxWindow caps the zstd window, and so the decoder's memory: 16 MiB covers every
	// standard compression level (zstd -19 uses 8 MiB); --long/--ultra bundles are refused.
	maxWindow = 16 << 20
)

// WithDefaults returns l with every zero limit set to its default.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

func (l Limits) withDefaults() Limits {
	if l.MaxCompressed <= 0 {
		l.MaxCompressed = DefaultMaxCompressed
	}
	if l.MaxTotal <= 0 {
		l.MaxTotal = DefaultMaxTotal
	}
	if l.MaxMembers <= 0 {
		l.MaxMembers = DefaultMaxMembers
	}
	if l.MaxMember <= 0 {
		l.MaxMember = DefaultMaxMember
	}
	return l
}

// Owner, when set, is given every extracted file and directory (the app user).
type Owner struct{ UID, GID int }

// Options for Unpack.
type Options struct {
	Limits Limits
	// Owner chowns extracted entries; nil leaves them to the current user.
	Owner *Owner
}

// Contents describes an unpacked input.
type Contents struct {
	Format  Format
	Config  []byte // config.toml
	Files   bool   // whether a files/ tree was extracted (bundles only)
	Members int
	Bytes   int64 // decompressed bytes of regular members
}

// Unpack reads a raw config.toml or a bundle from r. For a bundle it extracts files/ into
// dst as "files/..." (dirs 0700, files 0600). dst may be nil for a raw config; for a
// bundle with a files/ tree it is required. A failed Unpack may leave partial files in
// dst: callers extract into a candidate directory they remove on error.
func Unpack(ctx context.Context, r io.Reader, dst *os.Root, opts Options) (Contents, error) {
	lim := opts.Limits.withDefaults()
	cr := &countingReader{r: r, max: lim.MaxCompressed}
	br := bufio.NewReaderSize(cr, 64<<10)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		if errors.Is(err, ErrTooLarge) {
			return Contents{}, err
		}
		return Contents{}, fmt.Errorf("reading input: %w", err)
	}
	if len(head) == 0 {
		return Contents{}, ErrEmpty
	}
	if len(head) >= 262 && string(head[257:262]) == "ustar" {
		return Contents{}, fmt.Errorf("%w: an uncompressed tar; use .tar.gz or .tar.zst", ErrUnsupportedFormat)
	}
	switch f := Detect(head); f {
	case FormatTOML:
		raw, err := io.ReadAll(br)
		if err != nil {
			return Contents{}, fmt.Errorf("reading config: %w", err)
		}
		return Contents{Format: f, Config: raw, Bytes: int64(len(raw))}, nil
	case FormatGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return Contents{}, corrupt(cr, err)
		}
		defer zr.Close()
		c, err := untar(ctx, zr, dst, lim, opts.Owner)
		c.Format = f
		return c, corrupt(cr, err)
	default:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderMaxMemory(uint64(lim.MaxTotal)+1<<20))
		if err != nil {
			return Contents{}, corrupt(cr, err)
		}
		defer zr.Close()
		c, err := untar(ctx, zr, dst, lim, opts.Owner)
		c.Format = FormatZstd
		return c, corrupt(cr, err)
	}
}

// corrupt classifies a decoding error: limit errors pass through, the rest are ErrCorrupt.
func corrupt(cr *countingReader, err error) error {
	if err == nil {
		return nil
	}
	if cr.exceeded {
		return fmt.Errorf("%w: input exceeds %d bytes", ErrTooLarge, cr.max)
	}
	for _, known := range []error{ErrTooLarge, ErrTooManyMembers, ErrMemberTooLarge, ErrUnsafePath,
		ErrUnsupportedMember, ErrLayout, ErrNoConfig, ErrEmpty, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, known) {
			return err
		}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("writing bundle member: %w", err)
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

type countingReader struct {
	r        io.Reader
	n, max   int64
	exceeded bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.max {
		// Allow reading exactly max bytes; one more byte means too large.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			c.exceeded = true
			return 0, fmt.Errorf("%w: input exceeds %d bytes", ErrTooLarge, c.max)
		}
		return 0, err
	}
	if rem := c.max - c.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// MemberName cleans a tar member name and checks it is safe: relative, non-empty, no ".."
// component. It returns the cleaned name ("." for the root) and whether it is the root.
func MemberName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrUnsafePath)
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\x00") || strings.Contains(name, `\`) {
		return "", fmt.Errorf("%w: %q", ErrUnsafePath, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q has a .. component", ErrUnsafePath, name)
		}
	}
	clean := path.Clean(name)
	if clean == "" || strings.HasPrefix(clean, "/") || strings.HasPrefix(clean, "../") || clean == ".." {
		return "", fmt.Errorf("%w: %q", ErrUnsafePath, name)
	}
	return clean, nil
}

func untar(ctx context.Context, r io.Reader, dst *os.Root, lim Limits, owner *Owner) (Contents, error) {
	var c Contents
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	buf := make([]byte, 32<<10)
	for {
		if err := ctx.Err(); err != nil {
			return c, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return c, err
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		c.Members++
		if c.Members > lim.MaxMembers {
			return c, fmt.Errorf("%w: more than %d", ErrTooManyMembers, lim.MaxMembers)
		}
		name, err := MemberName(h.Name)
		if err != nil {
			return c, err
		}
		isDir := h.Typeflag == tar.TypeDir
		if !isDir && h.Typeflag != tar.TypeReg {
			return c, fmt.Errorf("%w: %q is a %s", ErrUnsupportedMember, h.Name, typeName(h.Typeflag))
		}
		if name == "." {
			if !isDir {
				return c, fmt.Errorf("%w: \".\" is only allowed as a directory", ErrUnsafePath)
			}
			continue
		}
		top, _, _ := strings.Cut(name, "/")
		switch {
		case name == "config.toml" && !isDir:
		case top == "files" && (name != "files" || isDir):
		default:
			return c, fmt.Errorf("%w: %q (a bundle holds config.toml and files/ only)", ErrLayout, h.Name)
		}
		if seen[name] {
			return c, fmt.Errorf("%w: %q appears twice", ErrLayout, h.Name)
		}
		seen[name] = true
		if h.Size > lim.MaxMember {
			return c, fmt.Errorf("%w: %q is %d bytes (limit %d)", ErrMemberTooLarge, h.Name, h.Size, lim.MaxMember)
		}
		if c.Bytes+h.Size > lim.MaxTotal {
			return c, fmt.Errorf("%w: more than %d bytes decompressed", ErrTooLarge, lim.MaxTotal)
		}
		switch {
		case name == "config.toml":
			raw, err := io.ReadAll(io.LimitReader(tr, h.Size))
			if err != nil {
				return c, err
			}
			c.Config = raw
		case isDir:
			if dst == nil {
				return c, fmt.Errorf("extracting %q: no destination", name)
			}
			if err := dst.MkdirAll(name, 0o700); err != nil {
				return c, fmt.Errorf("creating %s: %w", name, err)
			}
			if err := dst.Chmod(name, 0o700); err != nil {
				return c, fmt.Errorf("setting mode of %s: %w", name, err)
			}
			if err := chown(dst, name, owner); err != nil {
				return c, err
			}
			c.Files = true
		default:
			if dst == nil {
				return c, fmt.Errorf("extracting %q: no destination", name)
			}
			if err := writeMember(dst, name, tr, h.Size, buf, owner); err != nil {
				return c, err
			}
			c.Files = true
		}
		c.Bytes += h.Size
	}
	if c.Config == nil {
		return c, ErrNoConfig
	}
	return c, nil
}

func writeMember(dst *os.Root, name string, r io.Reader, size int64, buf []byte, owner *Owner) error {
	if dir := path.Dir(name); dir != "." {
		if err := dst.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	f, err := dst.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	n, err := io.CopyBuffer(f, io.LimitReader(r, size), buf)
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing %s: %w", name, cerr)
	}
	if err != nil {
		return err
	}
	return chown(dst, name, owner)
}

func chown(dst *os.Root, name string, owner *Owner) error {
	if owner == nil {
		return nil
	}
	if err := dst.Lchown(name, owner.UID, owner.GID); err != nil {
		return fmt.Errorf("chown %s: %w", name, err)
	}
	return nil
}

func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	}
	return fmt.Sprintf("member of type %q", t)
}
