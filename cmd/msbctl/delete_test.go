package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// delete --all --wait follows all the deleted objects at once: it returns
// once the last one is gone (their finalizers released one by one while it
// waits), and a timeout names one that is still there.
func TestDeleteAllWaitsForEvery(t *testing.T) {
	sock, c := newServer(t)
	ctx := context.Background()
	const n = 6
	create := func(name string) {
		t.Helper()
		sb := &v1alpha1.Sandbox{
			TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
			Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: "default", Finalizers: []string{v1alpha1.FinalizerSandbox}},
			Spec:     v1alpha1.SandboxSpec{Image: "busybox", Command: []string{"sleep", "1"}},
		}
		if _, err := c.Create(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		create(fmt.Sprintf("sb%d", i))
	}
	release := func(name string) {
		t.Helper()
		obj, err := c.Get(ctx, v1alpha1.KindSandbox, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		obj.GetMetadata().Finalizers = nil
		if _, err := c.Update(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until msbctl marked them all for deletion, then release all but
	// the last: the wait times out naming it.
	marked := func() bool {
		objs, _, err := c.List(ctx, v1alpha1.KindSandbox, "default", "")
		if err != nil {
			return false
		}
		for _, o := range objs {
			if o.GetMetadata().DeletionTimestamp == nil {
				return false
			}
		}
		return true
	}
	type result struct {
		code     int
		out, err string
	}
	run := func(timeout string) chan result {
		ch := make(chan result, 1)
		go func() {
			code, out, errs := cli(t, sock, "delete", "sandboxes", "--all", "--timeout="+timeout)
			ch <- result{code, out, errs}
		}()
		return ch
	}
	done := run("5s")
	waitUntil(t, marked)
	for i := range n - 1 {
		release(fmt.Sprintf("sb%d", i))
	}
	r := <-done
	if r.code != exitFail || !strings.Contains(r.err, "timed out waiting for the condition on sandboxes/sb5") {
		t.Errorf("delete --all with one held: exit %d, stderr %q; want a timeout naming sandboxes/sb5", r.code, r.err)
	}
	if got := strings.Count(r.out, "deleted\n"); got != n {
		t.Errorf("%d deletions printed, want %d:\n%s", got, n, r.out)
	}

	// Released while a second delete --all waits: it returns once all are
	// gone. sb5 is still held; sb6..sb8 are new (deleted after sb5, in
	// name order, so all of them marked means every DELETE was sent).
	for i := n; i < n+3; i++ {
		create(fmt.Sprintf("sb%d", i))
	}
	done = run("20s")
	waitUntil(t, marked)
	for i := n - 1; i < n+3; i++ {
		release(fmt.Sprintf("sb%d", i))
	}
	r = <-done
	if r.code != exitOK {
		t.Errorf("delete --all: exit %d, stderr %q", r.code, r.err)
	}
	if objs, _, err := c.List(ctx, v1alpha1.KindSandbox, "default", ""); err != nil || len(objs) != 0 {
		t.Errorf("after delete --all --wait: %d sandboxes left (%v)", len(objs), err)
	}
}

// waitUntil polls cond until it holds; the bound only keeps a broken
// command from hanging the suite.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
