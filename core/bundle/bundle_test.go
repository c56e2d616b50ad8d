package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

type member struct {
	name string
	typ  byte
	body string
	size int64 // when > 0, a body of this many zero bytes
	link string
}

func tarBytes(t testing.TB, members []member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range members {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		size := int64(len(m.body))
		if m.size > 0 {
			size = m.size
		}
		if typ != tar.TypeReg {
			size = 0
		}
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Typeflag: typ, Mode: 0o644, Size: size, Linkname: m.link}); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if m.size > 0 {
				zero := make([]byte, 1<<20)
				for left := m.size; left > 0; {
					n := min(left, int64(len(zero)))
					tw.Write(zero[:n])
					left -= n
				}
			} else {
				tw.Write([]byte(m.body))
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, f Format, raw []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch f {
	case FormatGzip:
		w := gzip.NewWriter(&b)
		w.Write(raw)
		w.Close()
	case FormatZstd:
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	default:
		return raw
	}
	return b.Bytes()
}

// snapshot records every path under dir with its content, to prove nothing changed.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			out[rel] = string(b)
		} else {
			out[rel] = d.Type().String()
		}
		return nil
	})
	return out
}

const cfg = "version = 1\n"

func TestUnpackHostile(t *testing.T) {
	small := Limits{MaxMembers: 8, MaxMember: 1 << 10, MaxTotal: 4 << 10, MaxCompressed: 1 << 20}
	many := []member{{name: "config.toml", body: cfg}}
	for i := 0; i < 10; i++ {
		many = append(many, member{name: "files/f" + string(rune('a'+i)), body: "x"})
	}
	tests := []struct {
		name    string
		members []member
		raw     func(t *testing.T, f Format) []byte // overrides members
		limits  Limits
		want    error
	}{
		{name: "absolute_path", members: []member{{name: "config.toml", body: cfg}, {name: "/etc/passwd", body: "x"}}, want: ErrUnsafePath},
		{name: "dotdot", members: []member{{name: "config.toml", body: cfg}, {name: "files/../../escape", body: "x"}}, want: ErrUnsafePath},
		{name: "dotdot_dir", members: []member{{name: "config.toml", body: cfg}, {name: "files/a/../../..", typ: tar.TypeDir}}, want: ErrUnsafePath},
		{name: "empty_name", members: []member{{name: "config.toml", body: cfg}, {name: "", body: "x"}}, want: ErrUnsafePath},
		{name: "dot_as_file", members: []member{{name: ".", body: "x"}, {name: "config.toml", body: cfg}}, want: ErrUnsafePath},
		{name: "symlink", members: []member{{name: "config.toml", body: cfg}, {name: "files/etc", typ: tar.TypeSymlink, link: "/etc"}}, want: ErrUnsupportedMember},
		{name: "symlink_then_write_through", members: []member{{name: "config.toml", body: cfg}, {name: "files/d", typ: tar.TypeSymlink, link: "../../.."}, {name: "files/d/x", body: "x"}}, want: ErrUnsupportedMember},
		{name: "hardlink", members: []member{{name: "config.toml", body: cfg}, {name: "files/h", typ: tar.TypeLink, link: "/etc/shadow"}}, want: ErrUnsupportedMember},
		{name: "char_device", members: []member{{name: "config.toml", body: cfg}, {name: "files/null", typ: tar.TypeChar}}, want: ErrUnsupportedMember},
		{name: "block_device", members: []member{{name: "config.toml", body: cfg}, {name: "files/sda", typ: tar.TypeBlock}}, want: ErrUnsupportedMember},
		{name: "fifo", members: []member{{name: "config.toml", body: cfg}, {name: "files/fifo", typ: tar.TypeFifo}}, want: ErrUnsupportedMember},
		{name: "unexpected_top_level", members: []member{{name: "config.toml", body: cfg}, {name: "evil.sh", body: "x"}}, want: ErrLayout},
		{name: "unexpected_top_level_dir", members: []member{{name: "config.toml", body: cfg}, {name: "etc/", typ: tar.TypeDir}}, want: ErrLayout},
		{name: "files_as_file", members: []member{{name: "config.toml", body: cfg}, {name: "files", body: "x"}}, want: ErrLayout},
		{name: "config_as_dir", members: []member{{name: "config.toml/", typ: tar.TypeDir}}, want: ErrLayout},
		{name: "duplicate_member", members: []member{{name: "config.toml", body: cfg}, {name: "files/a", body: "1"}, {name: "./files/a", body: "2"}}, want: ErrLayout},
		{name: "no_config", members: []member{{name: "files/a", body: "x"}}, want: ErrNoConfig},
		{name: "too_many_members", members: many, limits: small, want: ErrTooManyMembers},
		{name: "huge_member", members: []member{{name: "config.toml", body: cfg}, {name: "files/big", size: 2 << 10}}, limits: small, want: ErrMemberTooLarge},
		{name: "decompression_bomb", members: []member{{name: "config.toml", body: cfg}, {name: "files/a", size: 1 << 10}, {name: "files/b", size: 1 << 10}, {name: "files/c", size: 1 << 10}, {name: "files/d", size: 1 << 10}, {name: "files/e", size: 1 << 10}}, limits: small, want: ErrTooLarge},
		{name: "bomb_default_limits_zstd", members: []member{{name: "config.toml", body: cfg}, {name: "files/a", size: 52 << 20}, {name: "files/b", size: 52 << 20}, {name: "files/c", size: 52 << 20}, {name: "files/d", size: 52 << 20}, {name: "files/e", size: 52 << 20}}, want: ErrTooLarge},
		{name: "compressed_too_large", members: []member{{name: "config.toml", body: strings.Repeat("# padding\n", 1000)}}, limits: Limits{MaxCompressed: 64}, want: ErrTooLarge},
		{name: "truncated", raw: func(t *testing.T, f Format) []byte {
			b := compress(t, f, tarBytes(t, []member{{name: "config.toml", body: cfg}, {name: "files/a", body: strings.Repeat("abc", 5000)}}))
			return b[:len(b)/2]
		}, want: ErrCorrupt},
		{name: "corrupted", raw: func(t *testing.T, f Format) []byte {
			b := compress(t, f, tarBytes(t, []member{{name: "config.toml", body: cfg}, {name: "files/a", body: strings.Repeat("abcdefgh", 5000)}}))
			for i := 20; i < len(b)-20; i += 7 {
				b[i] ^= 0x5a
			}
			return b
		}, want: ErrCorrupt},
		{name: "garbage_after_magic", raw: func(t *testing.T, f Format) []byte {
			if f == FormatGzip {
				return append([]byte{0x1f, 0x8b}, bytes.Repeat([]byte{0xff}, 100)...)
			}
			return append([]byte{0x28, 0xb5, 0x2f, 0xfd}, bytes.Repeat([]byte{0xff}, 100)...)
		}, want: ErrCorrupt},
		{name: "plain_tar", raw: func(t *testing.T, f Format) []byte {
			return tarBytes(t, []member{{name: "config.toml", body: cfg}})
		}, want: ErrUnsupportedFormat},
		{name: "empty_input", raw: func(t *testing.T, f Format) []byte { return nil }, want: ErrEmpty},
	}
	for _, f := range []Format{FormatGzip, FormatZstd} {
		for _, tc := range tests {
			if tc.name == "bomb_default_limits_zstd" && f != FormatZstd {
				continue // 260 MiB of zeros: once is enough
			}
			t.Run(f.String()+"/"+tc.name, func(t *testing.T) {
				if tc.name == "bomb_default_limits_zstd" && testing.Short() {
					t.Skip("260 MiB of zeros; skipped with -short")
				}
				parent := t.TempDir()
				os.WriteFile(filepath.Join(parent, "outside"), []byte("keep"), 0o600)
				cand := filepath.Join(parent, "candidate")
				os.Mkdir(cand, 0o700)
				before := snapshot(t, parent)
				var raw []byte
				if tc.raw != nil {
					raw = tc.raw(t, f)
				} else {
					raw = compress(t, f, tarBytes(t, tc.members))
				}
				root, err := os.OpenRoot(cand)
				if err != nil {
					t.Fatal(err)
				}
				defer root.Close()
				_, err = Unpack(context.Background(), bytes.NewReader(raw), root, Options{Limits: tc.limits})
				if !errors.Is(err, tc.want) {
					t.Fatalf("Unpack() error = %v; want %v", err, tc.want)
				}
				after := snapshot(t, parent)
				for p, v := range after {
					if strings.HasPrefix(p, "candidate"+string(filepath.Separator)) {
						continue
					}
					if before[p] != v {
						t.Errorf("Unpack() changed %s outside the candidate", p)
					}
				}
				for p := range before {
					if _, ok := after[p]; !ok {
						t.Errorf("Unpack() removed %s", p)
					}
				}
			})
		}
	}
}

func TestUnpackValid(t *testing.T) {
	for _, f := range []Format{FormatGzip, FormatZstd} {
		t.Run(f.String(), func(t *testing.T) {
			raw := compress(t, f, tarBytes(t, []member{
				{name: "./", typ: tar.TypeDir},
				{name: "./config.toml", body: cfg},
				{name: "./files/", typ: tar.TypeDir},
				{name: "./files/app/", typ: tar.TypeDir},
				{name: "./files/app/config.yaml", body: "a: 1\n"},
				{name: "files/deep/er/file", body: "x"}, // parents created on demand
			}))
			dir := t.TempDir()
			root, _ := os.OpenRoot(dir)
			defer root.Close()
			c, err := Unpack(context.Background(), bytes.NewReader(raw), root, Options{})
			if err != nil {
				t.Fatalf("Unpack() error = %v", err)
			}
			if string(c.Config) != cfg || !c.Files || c.Format != f || c.Members != 6 {
				t.Errorf("Unpack() = %+v", c)
			}
			b, err := os.ReadFile(filepath.Join(dir, "files/app/config.yaml"))
			if err != nil || string(b) != "a: 1\n" {
				t.Errorf("files/app/config.yaml = %q, %v", b, err)
			}
			for p, want := range map[string]os.FileMode{"files": 0o700 | fs.ModeDir, "files/app": 0o700 | fs.ModeDir, "files/app/config.yaml": 0o600, "files/deep/er/file": 0o600} {
				st, err := os.Stat(filepath.Join(dir, p))
				if err != nil || st.Mode() != want {
					t.Errorf("mode of %s = %v, %v; want %v", p, st.Mode(), err, want)
				}
			}
		})
	}
}

func TestUnpackRawTOML(t *testing.T) {
	c, err := Unpack(context.Background(), strings.NewReader(cfg), nil, Options{})
	if err != nil || c.Format != FormatTOML || string(c.Config) != cfg {
		t.Fatalf("Unpack(raw) = %+v, %v", c, err)
	}
	_, err = Unpack(context.Background(), strings.NewReader(strings.Repeat("#", 100)), nil, Options{Limits: Limits{MaxCompressed: 99}})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Unpack(oversize raw) error = %v; want ErrTooLarge", err)
	}
}

func TestCreateRoundTrip(t *testing.T) {
	files := fstest.MapFS{
		"app/config.yaml":       {Data: []byte("a: 1\n")},
		"cockpit/Containerfile": {Data: []byte("FROM x\n")},
		"empty":                 {Mode: fs.ModeDir},
	}
	for _, f := range []Format{FormatGzip, FormatZstd} {
		var a, b bytes.Buffer
		if err := Create(&a, f, []byte(cfg), files); err != nil {
			t.Fatal(err)
		}
		Create(&b, f, []byte(cfg), files)
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("Create(%s) is not deterministic", f)
		}
		dir := t.TempDir()
		root, _ := os.OpenRoot(dir)
		c, err := Unpack(context.Background(), &a, root, Options{})
		root.Close()
		if err != nil {
			t.Fatalf("Unpack(Create()) error = %v", err)
		}
		if string(c.Config) != cfg {
			t.Errorf("config = %q", c.Config)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "files/cockpit/Containerfile"))
		if string(got) != "FROM x\n" {
			t.Errorf("Containerfile = %q", got)
		}
		if st, err := os.Stat(filepath.Join(dir, "files/empty")); err != nil || !st.IsDir() {
			t.Errorf("files/empty: %v", err)
		}
	}
}

func FuzzMemberName(f *testing.F) {
	for _, s := range []string{"config.toml", "./files/a", "files/../x", "/abs", "", ".", "a//b", "files/./x", `a\..\b`, "..", "x/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := MemberName(name)
		if err != nil {
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("MemberName(%q) error = %v; want ErrUnsafePath", name, err)
			}
			return
		}
		// Property: an accepted name stays inside any root it is joined to.
		joined := filepath.Join("/root", clean)
		if joined != "/root" && !strings.HasPrefix(joined, "/root/") {
			t.Fatalf("MemberName(%q) = %q escapes the root (%s)", name, clean, joined)
		}
		for _, part := range strings.Split(clean, "/") {
			if part == ".." {
				t.Fatalf("MemberName(%q) = %q keeps a .. component", name, clean)
			}
		}
	})
}
