package v1alpha1

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidateDisk(t *testing.T) {
	for _, tt := range []struct {
		disk Quantity
		want string // "" valid
	}{
		{"", ""},
		{"0", ""},
		{"64Mi", ""},
		{"10Gi", ""},
		{"1Mi", "must be 0 (unlimited) or at least 64Mi"},
		{"ten", "spec.resources.disk"},
		{"-1Gi", "spec.resources.disk"},
	} {
		t.Run(string(tt.disk), func(t *testing.T) {
			sb := &Sandbox{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindSandbox},
				Metadata: ObjectMeta{Name: "d", Namespace: "default"},
				Spec:     SandboxSpec{Image: "busybox", Resources: ResourceRequirements{Disk: tt.disk}}}
			SetDefaults(sb)
			errs := Validate(sb)
			got := fmt.Sprint(errs)
			switch {
			case tt.want == "" && len(errs) > 0:
				t.Errorf("disk %q: %v", tt.disk, errs)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("disk %q: errors %v, want one with %q", tt.disk, errs, tt.want)
			}
		})
	}
}
