package images

import (
	"archive/tar"
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// writeBenchLayer writes an uncompressed layer of about 200 MiB with mixed file sizes:
// many small files, some medium ones and a few large ones, in nested directories.
func writeBenchLayer(tb testing.TB, p string) int64 {
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	rng := rand.New(rand.NewPCG(1, 2))
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(rng.Uint32())
	}
	var total int64
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(name string, size int) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(size), ModTime: mtime, Uid: 1000, Gid: 1000}); err != nil {
			tb.Fatal(err)
		}
		for left := size; left > 0; {
			n := min(left, len(chunk))
			if _, err := tw.Write(chunk[:n]); err != nil {
				tb.Fatal(err)
			}
			left -= n
		}
		total += int64(size)
	}
	dirs := 0
	mkdir := func(name string) {
		dirs++
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime}); err != nil {
			tb.Fatal(err)
		}
	}
	for d := range 40 {
		dir := "usr/lib/pkg" + strconv.Itoa(d) + "/"
		if d == 0 {
			mkdir("usr/")
			mkdir("usr/lib/")
		}
		mkdir(dir)
		for i := range 200 { // 8000 small files, 0.5-8 KiB: ~34 MiB
			add(dir+"small"+strconv.Itoa(i), 512+rng.IntN(8<<10))
			if i%50 == 0 {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: dir + "link" + strconv.Itoa(i), Linkname: "small0", ModTime: mtime}); err != nil {
					tb.Fatal(err)
				}
			}
		}
		for i := range 10 { // 400 medium files, 64-256 KiB: ~60 MiB
			add(dir+"medium"+strconv.Itoa(i), 64<<10+rng.IntN(192<<10))
		}
	}
	for i := range 7 { // 7 large files of 16 MiB: 112 MiB
		add("opt/big"+strconv.Itoa(i), 16<<20)
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	return total
}

// BenchmarkUnpack compares the unpacker with GNU tar extracting the same uncompressed
// layer (as root, so tar also restores owners, modes and times). ratio is tar's time
// divided by ours: 1 means as fast as tar, above 1 faster.
func BenchmarkUnpack(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("requires root")
	}
	if _, err := exec.LookPath("tar"); err != nil {
		b.Skip("tar not installed")
	}
	work := b.TempDir()
	layer := filepath.Join(work, "layer.tar")
	size := writeBenchLayer(b, layer)
	ids := idMap{set: true, hostUID: 2000000000, hostGID: 2000000000, size: 65536}

	var ours, theirs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dst := filepath.Join(work, "x")
		os.RemoveAll(dst)
		os.Mkdir(dst, 0o755)
		exec.Command("sync").Run()
		b.StartTimer()

		start := time.Now()
		root, err := os.OpenRoot(dst)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(layer)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := unpackTar(context.Background(), root, f, "bench", ids, 1<<40, 1<<40); err != nil {
			b.Fatal(err)
		}
		f.Close()
		root.Close()
		ours += time.Since(start)

		b.StopTimer()
		os.RemoveAll(dst)
		os.Mkdir(dst, 0o755)
		exec.Command("sync").Run()
		start = time.Now()
		if out, err := exec.Command("tar", "-xf", layer, "-C", dst).CombinedOutput(); err != nil {
			b.Fatalf("tar: %v: %s", err, out)
		}
		theirs += time.Since(start)
		b.StartTimer()
	}
	b.StopTimer()
	os.RemoveAll(filepath.Join(work, "x"))
	n := float64(b.N)
	b.SetBytes(size)
	b.ReportMetric(float64(size)/(1<<20)/(ours.Seconds()/n), "MiB/s")
	b.ReportMetric(float64(size)/(1<<20)/(theirs.Seconds()/n), "tar-MiB/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
}
