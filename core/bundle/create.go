package bundle

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Create writes a bundle holding config and, when files is not nil, every directory and
// regular file of files under files/. The output is deterministic: entries in lexical
// order, zero timestamps and owners, modes 0700/0600, so the same state gives the same
// bytes.
func Create(w io.Writer, format Format, config []byte, files fs.FS) error {
	var zw io.WriteCloser
	switch format {
	case FormatGzip:
		zw = gzip.NewWriter(w)
	case FormatZstd:
		enc, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(maxWindow/2))
		if err != nil {
			return fmt.Errorf("creating zstd writer: %w", err)
		}
		zw = enc
	default:
		return fmt.Errorf("creating bundle: format %s is not an archive", format)
	}
	tw := tar.NewWriter(zw)
	epoch := time.Unix(0, 0)
	hdr := func(name string, typ byte, mode int64, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: mode, Size: size, ModTime: epoch, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr("config.toml", tar.TypeReg, 0o600, int64(len(config)))); err != nil {
		return fmt.Errorf("writing config.toml header: %w", err)
	}
	if _, err := tw.Write(config); err != nil {
		return fmt.Errorf("writing config.toml: %w", err)
	}
	if files != nil {
		err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := "files/" + p
			if p == "." {
				name = "files/"
			}
			switch {
			case d.IsDir():
				if p != "." {
					name += "/"
				}
				return tw.WriteHeader(hdr(name, tar.TypeDir, 0o700, 0))
			case d.Type().IsRegular():
				info, err := d.Info()
				if err != nil {
					return err
				}
				if err := tw.WriteHeader(hdr(name, tar.TypeReg, 0o600, info.Size())); err != nil {
					return err
				}
				f, err := files.Open(p)
				if err != nil {
					return err
				}
				n, err := io.Copy(tw, f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err == nil && n != info.Size() {
					err = fmt.Errorf("%s changed size while bundling", p)
				}
				return err
			default:
				return fmt.Errorf("%w: %s is not a regular file or directory", ErrUnsupportedMember, p)
			}
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("adding files: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("closing tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("closing compressor: %w", err)
	}
	return nil
}
