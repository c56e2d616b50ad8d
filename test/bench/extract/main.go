// Command extract compares fleetprov's bundle extraction with GNU tar + zstd on the same
// ~100 MB, ~1000-file .tar.zst, in the same run: wall time and peak RSS of each, as
// separate processes. Run it with `go run ./test/bench/extract` (needs tar, zstd and GNU
// time: apt-get install zstd time).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/fleetprov/fleetprov/core/bundle"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "unpack" {
		os.Exit(unpack(os.Args[2]))
	}
	files := flag.Int("files", 1000, "files in the bundle")
	size := flag.Int("mb", 100, "total MiB of file data")
	runs := flag.Int("runs", 5, "runs of each extractor")
	flag.Parse()
	if err := bench(*files, *size, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "extract:", err)
		os.Exit(1)
	}
}

// unpack is the measured child: fleetprov's extraction of stdin into dir.
func unpack(dir string) int {
	root, err := os.OpenRoot(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The contract limits stop at 32 MiB compressed; this bundle is larger on purpose.
	lim := bundle.Limits{MaxCompressed: 1 << 30, MaxTotal: 1 << 30}
	if _, err := bundle.Unpack(context.Background(), os.Stdin, root, bundle.Options{Limits: lim}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func bench(files, mb, runs int) error {
	tmp, err := os.MkdirTemp("", "fleetprov-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	if err := makeTree(src, files, mb); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(src, "config.toml"), []byte("version = 1\n"), 0o600)
	var buf bytes.Buffer
	if err := bundle.Create(&buf, bundle.FormatZstd, []byte("version = 1\n"), os.DirFS(filepath.Join(src, "files"))); err != nil {
		return err
	}
	archive := filepath.Join(tmp, "bundle.tar.zst")
	if err := os.WriteFile(archive, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Printf("bundle: %d files, %d MiB of data, %.1f MiB compressed (zstd)\n", files, mb, float64(buf.Len())/(1<<20))
	self, _ := os.Executable()
	type result struct {
		wall []time.Duration
		rss  []int64
	}
	measure := func(name string, cmd func(dir string) *exec.Cmd) (result, error) {
		var r result
		for i := 0; i < runs; i++ {
			dir := filepath.Join(tmp, fmt.Sprintf("%s-%d", name, i))
			os.MkdirAll(dir, 0o700)
			// GNU time reports the peak RSS of its own child. Go starts children with
			// vfork, so a child's rusage would include this (large) process's memory.
			inner := cmd(dir)
			rssFile := filepath.Join(tmp, "rss")
			c := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile}, inner.Args...)...)
			in, _ := os.Open(archive)
			c.Stdin = in
			var stderr bytes.Buffer
			c.Stderr = &stderr
			t0 := time.Now()
			err := c.Run()
			in.Close()
			if err != nil {
				return r, fmt.Errorf("%s: %w: %s", name, err, stderr.String())
			}
			r.wall = append(r.wall, time.Since(t0))
			kb, err := os.ReadFile(rssFile)
			if err != nil {
				return r, err
			}
			var rss int64
			fmt.Sscan(string(kb), &rss)
			r.rss = append(r.rss, rss)
			os.RemoveAll(dir)
		}
		return r, nil
	}
	ours, err := measure("fleetprov", func(dir string) *exec.Cmd { return exec.Command(self, "unpack", dir) })
	if err != nil {
		return err
	}
	gnu, err := measure("gnutar", func(dir string) *exec.Cmd { return exec.Command("tar", "--zstd", "-xf", "-", "-C", dir) })
	if err != nil {
		return err
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	maxRSS := func(r []int64) int64 {
		m := int64(0)
		for _, v := range r {
			m = max(m, v)
		}
		return m
	}
	fmt.Printf("%-22s %12s %14s\n", "extractor", "median wall", "peak RSS")
	fmt.Printf("%-22s %12s %11.1f MiB\n", "fleetprov (Go)", med(ours.wall).Round(time.Millisecond), float64(maxRSS(ours.rss))/1024)
	fmt.Printf("%-22s %12s %11.1f MiB\n", "GNU tar --zstd", med(gnu.wall).Round(time.Millisecond), float64(maxRSS(gnu.rss))/1024)
	fmt.Printf("time ratio fleetprov/tar: %.2f (runs: %d each)\n", float64(med(ours.wall))/float64(med(gnu.wall)), runs)
	return nil
}

// makeTree writes files under src/files: half compressible text, half random bytes.
func makeTree(src string, files, mb int) error {
	per := mb << 20 / files
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < files; i++ {
		p := filepath.Join(src, "files", fmt.Sprintf("d%02d", i%37), fmt.Sprintf("f%04d.dat", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		b := make([]byte, per)
		if i%2 == 0 {
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		} else {
			line := []byte(fmt.Sprintf("line of config text number %d with some words repeated\n", i))
			for j := range b {
				b[j] = line[j%len(line)]
			}
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
