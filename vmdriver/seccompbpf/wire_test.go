package seccompbpf

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMarshalRoundTrip(t *testing.T) {
	prog, _ := mustCompile(t, defaultProfile(t))
	b := Marshal(prog)
	if len(b) != 8*len(prog) {
		t.Fatalf("%d bytes for %d instructions", len(b), len(prog))
	}
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, prog) {
		t.Fatal("round trip changed the program")
	}
}

func TestMarshalLayout(t *testing.T) {
	b := Marshal([]unix.SockFilter{{Code: 0x0102, Jt: 3, Jf: 4, K: 0x05060708}})
	want := make([]byte, 8)
	binary.NativeEndian.PutUint16(want[0:], 0x0102)
	want[2], want[3] = 3, 4
	binary.NativeEndian.PutUint32(want[4:], 0x05060708)
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x, want % x", b, want)
	}
	// amd64 and arm64 are little-endian: this is struct sock_filter's layout.
	if le := []byte{0x02, 0x01, 3, 4, 0x08, 0x07, 0x06, 0x05}; Supported() && !bytes.Equal(b, le) {
		t.Fatalf("got % x, want % x", b, le)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	for _, c := range []struct {
		n    int
		want string
	}{
		{0, "empty"},
		{7, "multiple of 8"},
		{9, "multiple of 8"},
		{8*4096 + 4, "multiple of 8"},
		{8 * 4097, "4097 instructions"},
	} {
		if _, err := Unmarshal(make([]byte, c.n)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d bytes: error %v, want %q", c.n, err, c.want)
		}
	}
	if _, err := Unmarshal(nil); err == nil {
		t.Error("nil input accepted")
	}
	for _, n := range []int{8, 8 * 4096} {
		if prog, err := Unmarshal(make([]byte, n)); err != nil || len(prog) != n/8 {
			t.Errorf("%d bytes: %d instructions, %v", n, len(prog), err)
		}
	}
}

func TestInstallRefusesBadLength(t *testing.T) {
	// Both fail before any system call, so this is safe in the test process.
	if err := Install(nil); err == nil {
		t.Error("empty program accepted")
	}
	if err := Install(make([]unix.SockFilter, 4097)); err == nil {
		t.Error("4097 instructions accepted")
	}
}
