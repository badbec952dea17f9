package reconciler

import (
	"context"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store/storetest"
)

func TestNetworkPolicyCountsSelectedSandboxes(t *testing.T) {
	st := storetest.Open(t)
	mk := func(name string, labels map[string]string) {
		t.Helper()
		sb := &v1alpha1.Sandbox{Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: "default", Labels: labels}, Spec: v1alpha1.SandboxSpec{Image: "x"}}
		if err := st.Create(sb); err != nil {
			t.Fatal(err)
		}
	}
	mk("a", map[string]string{"app": "agent"})
	mk("b", map[string]string{"app": "agent", "tier": "1"})
	mk("c", map[string]string{"app": "db"})
	np := &v1alpha1.NetworkPolicy{Metadata: v1alpha1.ObjectMeta{Name: "p", Namespace: "default"},
		Spec: v1alpha1.NetworkPolicySpec{SandboxSelector: v1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}}}
	if err := st.Create(np); err != nil {
		t.Fatal(err)
	}
	r := &NetworkPolicyReconciler{Store: st}
	key := v1alpha1.KeyOf(np)
	for range 2 {
		if _, err := r.Reconcile(context.Background(), key); err != nil {
			t.Fatal(err)
		}
	}
	got := &v1alpha1.NetworkPolicy{}
	if err := st.Get(v1alpha1.KindNetworkPolicy, "default", "p", got); err != nil {
		t.Fatal(err)
	}
	if got.Status.SelectedSandboxes != 2 || got.Status.ObservedGeneration != got.Metadata.Generation {
		t.Errorf("status %+v, want 2 selected at generation %d", got.Status, got.Metadata.Generation)
	}
	if keys := PoliciesInNamespace(st)(&v1alpha1.Sandbox{Metadata: v1alpha1.ObjectMeta{Namespace: "default"}}); len(keys) != 1 || keys[0] != key {
		t.Errorf("related keys %q, want %q", keys, key)
	}
}
