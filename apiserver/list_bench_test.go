package apiserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// BenchmarkListSandboxes lists 100 and 1000 running-looking sandboxes
// (with status) through the API and the client, as `msbctl get sb -A`
// does: ns/op divided by the size should stay flat (linear list cost).
func BenchmarkListSandboxes(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			e := newEnv(b)
			objs := make([]v1alpha1.Object, 0, n)
			for i := range n {
				objs = append(objs, sandbox(fmt.Sprintf("ns%d", i%3), fmt.Sprintf("sb%04d", i), map[string]string{"app": "bench"}))
			}
			if _, err := e.store.Apply(objs, false); err != nil {
				b.Fatal(err)
			}
			now := time.Now().UTC()
			for _, o := range objs {
				sb := &v1alpha1.Sandbox{}
				m := o.GetMetadata()
				if err := e.store.Get(v1alpha1.KindSandbox, m.Namespace, m.Name, sb); err != nil {
					b.Fatal(err)
				}
				sb.Status = v1alpha1.SandboxStatus{Phase: v1alpha1.PhaseRunning, PID: 4242, IP: "10.213.0.6", Driver: "container",
					StartedAt: &now, SpecHash: "0123456789abcdef", ObservedGeneration: 1,
					Conditions: []v1alpha1.Condition{
						{Type: v1alpha1.ConditionReady, Status: v1alpha1.ConditionTrue, Reason: "Running", LastTransitionTime: now},
						{Type: v1alpha1.ConditionImageReady, Status: v1alpha1.ConditionTrue, Reason: "Pulled", LastTransitionTime: now},
					}}
				if err := e.store.UpdateStatus(sb); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				got, _, err := e.client.List(ctx, v1alpha1.KindSandbox, "", "")
				if err != nil || len(got) != n {
					b.Fatalf("list: %d objects, %v", len(got), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/object")
		})
	}
}
