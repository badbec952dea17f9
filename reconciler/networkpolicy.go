package reconciler

import (
	"context"
	"encoding/json"
	"errors"

	"msb.dev/msb/apis/v1alpha1"
)

// PolicyStore is what the NetworkPolicy controller needs from the store.
type PolicyStore interface {
	Get(kind, namespace, name string, into v1alpha1.Object) error
	List(kind, namespace string) ([]v1alpha1.Object, int64, error)
	UpdateStatus(obj v1alpha1.Object) error
}

// NetworkPolicyReconciler keeps each NetworkPolicy's status: how many
// Sandboxes it selects (what `msbctl get networkpolicies` shows). Enforcement
// is the Sandbox controller's: it compiles the policies selecting a sandbox
// into the rules the egress proxy and DNS filter apply.
type NetworkPolicyReconciler struct {
	Store PolicyStore
}

// Reconcile implements Reconciler for keys "NetworkPolicy/ns/name".
func (r *NetworkPolicyReconciler) Reconcile(ctx context.Context, key string) (Result, error) {
	_, ns, name, err := v1alpha1.SplitKey(key)
	if err != nil {
		return Result{}, Terminal(err)
	}
	np := &v1alpha1.NetworkPolicy{}
	if err := r.Store.Get(v1alpha1.KindNetworkPolicy, ns, name, np); err != nil {
		if errors.Is(err, v1alpha1.ErrNotFound) {
			return Result{}, nil
		}
		return Result{}, err
	}
	sbs, _, err := r.Store.List(v1alpha1.KindSandbox, ns)
	if err != nil {
		return Result{}, err
	}
	var n int32
	for _, o := range sbs {
		if m := o.GetMetadata(); m.DeletionTimestamp == nil && np.Spec.SandboxSelector.Matches(m.Labels) {
			n++
		}
	}
	st := np.Status
	st.SelectedSandboxes = n
	st.ObservedGeneration = np.Metadata.Generation
	a, _ := json.Marshal(np.Status)
	b, _ := json.Marshal(st)
	if string(a) == string(b) {
		return Result{}, nil
	}
	np.Status = st
	err = r.Store.UpdateStatus(np)
	if errors.Is(err, v1alpha1.ErrConflict) || errors.Is(err, v1alpha1.ErrNotFound) {
		return Result{}, nil // changed or gone meanwhile: its own change queued it again
	}
	return Result{}, err
}
