package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/client"
	"msb.dev/msb/store/storetest"
)

// hostileAgent is what a sandbox that took over its agent socket could
// serve: an SSH server answering every copy with a crafted tar stream.
type hostileAgent struct {
	sock   string
	stream []byte
}

func (h *hostileAgent) AgentSocket(*v1alpha1.Sandbox) (string, error) { return h.sock, nil }
func (h *hostileAgent) LogDir(*v1alpha1.Sandbox) (string, error)      { return "", fmt.Errorf("no logs") }

func startHostileAgent(t *testing.T, dir string) *hostileAgent {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(key)
	conf := &ssh.ServerConfig{NoClientAuth: true}
	conf.AddHostKey(signer)
	h := &hostileAgent{sock: filepath.Join(dir, "agent.sock")}
	ln, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(c, conf)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					ch, creqs, err := nc.Accept()
					if err != nil {
						continue
					}
					go func() {
						for req := range creqs {
							req.Reply(req.Type == "exec", nil)
							if req.Type == "exec" {
								ch.Write(h.stream)
								ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
								ch.Close()
							}
						}
					}()
				}
			}()
		}
	}()
	return h
}

// hostileSandbox serves msbd's API with a sandbox "evil" whose agent is
// hostileAgent; it returns the agent and the API socket.
func hostileSandbox(t *testing.T) (*hostileAgent, string) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "msbctl-cp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	agent := startHostileAgent(t, dir)
	st := storetest.Open(t)
	sock := filepath.Join(dir, "msbd.sock")
	ln, err := apiserver.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: apiserver.New(apiserver.Config{Store: st, Runtime: agent})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := client.New(sock)
	if _, err := c.Create(context.Background(), &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: "evil", Namespace: "default"},
		Spec:     v1alpha1.SandboxSpec{Image: "busybox"},
	}); err != nil {
		t.Fatal(err)
	}
	return agent, sock
}

// TestCpIntoExistingDirHeldToTheEntry: `msbctl cp evil:/out.txt HOME`, HOME
// an existing directory, lands out.txt and nothing else: the hostile stream's
// dotfile, directory re-mode and hardlink to the key are refused by name;
// a symlink chained through another one is refused too.
func TestCpIntoExistingDirHeldToTheEntry(t *testing.T) {
	agent, sock := hostileSandbox(t)
	type ent struct {
		name, link string
		typ        byte
		mode       int64
	}
	streams := []struct {
		src  string
		ents []ent
		bad  string
	}{
		{"/out.txt", []ent{{name: "out.txt", typ: tar.TypeReg}, {name: ".bashrc", typ: tar.TypeReg}}, ".bashrc"},
		{"/out.txt", []ent{{name: ".bashrc", typ: tar.TypeReg}, {name: "out.txt", typ: tar.TypeReg}}, ".bashrc"},
		{"/out.txt", []ent{{name: "out.txt", typ: tar.TypeReg}, {name: ".ssh/", typ: tar.TypeDir, mode: 0o777}}, ".ssh/"},
		{"/out.txt", []ent{{name: "out.txt", typ: tar.TypeReg}, {name: "loot", link: ".ssh/id_rsa", typ: tar.TypeLink}}, "loot"},
		{"/w/.ssh", []ent{{name: ".ssh/", typ: tar.TypeDir, mode: 0o777}, {name: ".ssh/loot", link: ".ssh/id_rsa", typ: tar.TypeLink}}, ".ssh/loot"},
		{"/out", []ent{{name: "out/", typ: tar.TypeDir}, {name: "out/d/", typ: tar.TypeDir}, {name: "out/d/s", link: "..", typ: tar.TypeSymlink}, {name: "out/t", link: "d/s/../../.ssh/id_rsa", typ: tar.TypeSymlink}}, "out/t"},
	}
	for _, tc := range streams {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, e := range tc.ents {
			h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644}
			if e.mode != 0 {
				h.Mode = e.mode
			}
			if e.typ == tar.TypeReg {
				h.Size = 5
			}
			tw.WriteHeader(h)
			if e.typ == tar.TypeReg {
				tw.Write([]byte("evil\n"))
			}
		}
		tw.Close()
		agent.stream = b.Bytes()
		home := t.TempDir()
		os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
		os.WriteFile(filepath.Join(home, ".bashrc"), []byte("orig"), 0o644)
		os.WriteFile(filepath.Join(home, ".ssh/id_rsa"), []byte("SECRET"), 0o600)
		code, _, errs := cli(t, sock, "cp", "evil:"+tc.src, home)
		if code != exitFail || !strings.Contains(errs, fmt.Sprintf("%q", tc.bad)) || !strings.Contains(errs, "refused") {
			t.Errorf("%s %v: exit %d, stderr %q: want a refusal naming %q", tc.src, tc.ents, code, errs, tc.bad)
		}
		if got, _ := os.ReadFile(filepath.Join(home, ".bashrc")); string(got) != "orig" {
			t.Errorf(".bashrc now %q", got)
		}
		if fi, _ := os.Stat(filepath.Join(home, ".ssh")); fi.Mode().Perm() != 0o700 {
			t.Errorf(".ssh now %v", fi.Mode())
		}
		filepath.WalkDir(home, func(p string, d fs.DirEntry, err error) error {
			if d != nil && !d.IsDir() && !strings.HasSuffix(p, "/.ssh/id_rsa") && !strings.HasSuffix(p, "/.bashrc") && !strings.HasSuffix(p, "/out.txt") && !strings.HasPrefix(p, filepath.Join(home, "out")+"/") {
				t.Errorf("%s: %s written", tc.src, p)
			}
			return nil
		})
	}
	// The control: the entry asked for lands in the existing directory.
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "out.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("hi\n"))
	tw.Close()
	agent.stream = b.Bytes()
	home := t.TempDir()
	if code, _, errs := cli(t, sock, "cp", "evil:/out.txt", home); code != exitOK {
		t.Fatalf("control: exit %d, %s", code, errs)
	}
	if got, _ := os.ReadFile(filepath.Join(home, "out.txt")); string(got) != "hi\n" {
		t.Errorf("control: out.txt reads %q", got)
	}
}

// TestCpRefusesHostileSandbox: msbctl cp from a sandbox whose agent sends
// each escape form writes nothing outside the destination and names the
// entry; the same stream without the hostile entry lands (the control).
func TestCpRefusesHostileSandbox(t *testing.T) {
	agent, sock := hostileSandbox(t)
	type ent struct {
		name, link string
		typ        byte
	}
	good := ent{name: "d/ok", typ: tar.TypeReg}
	cases := []struct {
		form string
		ents []ent
		bad  string
	}{
		{"absolute name", []ent{{name: "/tmp/OUTSIDE", typ: tar.TypeReg}}, "/tmp/OUTSIDE"},
		{"dotdot", []ent{{name: "d/../../OUTSIDE", typ: tar.TypeReg}}, "d/../../OUTSIDE"},
		{"symlink out", []ent{{name: "d/l", link: "/etc", typ: tar.TypeSymlink}}, "d/l"},
		{"relative symlink out", []ent{{name: "d/l", link: "../../..", typ: tar.TypeSymlink}}, "d/l"},
		{"through a symlink", []ent{{name: "d/l", link: ".", typ: tar.TypeSymlink}, {name: "d/l/OUTSIDE", typ: tar.TypeReg}}, "d/l/OUTSIDE"},
		{"hardlink out", []ent{{name: "d/h", link: "/etc/passwd", typ: tar.TypeLink}}, "d/h"},
		{"device", []ent{{name: "d/null", typ: tar.TypeChar}}, "d/null"},
		{"fifo", []ent{{name: "d/p", typ: tar.TypeFifo}}, "d/p"},
		{"symlink swapped in", []ent{{name: "d/s/", typ: tar.TypeDir}, {name: "d/s", link: "..", typ: tar.TypeSymlink}}, "d/s"},
	}
	for _, tc := range cases {
		t.Run(tc.form, func(t *testing.T) {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			for _, e := range append([]ent{{name: "d/", typ: tar.TypeDir}, good}, tc.ents...) {
				h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644}
				if e.typ == tar.TypeReg {
					h.Size = 2
				}
				tw.WriteHeader(h)
				if e.typ == tar.TypeReg {
					tw.Write([]byte("x\n"))
				}
			}
			tw.Close()
			agent.stream = b.Bytes()
			base := t.TempDir()
			dest := filepath.Join(base, "dest")
			code, _, errs := cli(t, sock, "cp", "evil:/d", dest)
			if code != exitFail || !strings.Contains(errs, fmt.Sprintf("%q", tc.bad)) || !strings.Contains(errs, "refused") {
				t.Errorf("exit %d, stderr %q: want a refusal naming %q", code, errs, tc.bad)
			}
			filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
				if p != base && !strings.HasPrefix(p, dest) {
					t.Errorf("%s written outside the destination", p)
				}
				if d != nil && d.Type()&fs.ModeSymlink != 0 {
					tgt, _ := os.Readlink(p)
					if rel, _ := filepath.Rel(dest, filepath.Join(filepath.Dir(p), tgt)); filepath.IsAbs(tgt) || (rel != "." && !filepath.IsLocal(rel)) {
						t.Errorf("symlink %s -> %s left pointing out", p, tgt)
					}
				}
				return nil
			})
			if _, err := os.Lstat("/tmp/OUTSIDE"); err == nil {
				t.Error("/tmp/OUTSIDE written")
			}
		})
	}
	// The control: the same stream without a hostile entry lands.
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "d/ok", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
	tw.Write([]byte("x\n"))
	tw.Close()
	agent.stream = b.Bytes()
	dest := filepath.Join(t.TempDir(), "dest")
	if code, _, errs := cli(t, sock, "cp", "evil:/d", dest); code != exitOK {
		t.Fatalf("control: exit %d, %s", code, errs)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "ok")); string(got) != "x\n" {
		t.Errorf("control: ok reads %q", got)
	}
}
