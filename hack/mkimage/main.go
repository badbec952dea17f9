// Command mkimage writes a small busybox image as an OCI image layout, for demos and
// tests: go run ./hack/mkimage -o DIR [-tag latest], then use image: oci:DIR:latest.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"msb.dev/msb/images/imagetest"
)

func main() {
	out := flag.String("o", "", "directory of the OCI image layout to write (created if missing)")
	tag := flag.String("tag", "latest", "tag of the image in the layout")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mkimage -o DIR [-tag latest]")
		os.Exit(2)
	}
	if err := run(*out, *tag); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(dir, tag string) error {
	img, err := imagetest.BusyboxImage()
	if err != nil {
		return err
	}
	if err := imagetest.WriteOCILayout(dir, img, tag); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s (image oci:%s:%s)\n", d, abs, tag)
	return nil
}
