package v1alpha1

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Quantity is a Kubernetes-style quantity kept as written ("512Mi", "1.5",
// "500m") so it round-trips unchanged; Value and MilliValue parse it.
type Quantity string

var quantitySuffixes = []struct {
	s string
	m float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
	{"m", 1e-3},
}

func (q Quantity) parse() (float64, error) {
	s := strings.TrimSpace(string(q))
	if s == "" {
		return 0, nil
	}
	mult := 1.0
	for _, suf := range quantitySuffixes {
		if strings.HasSuffix(s, suf.s) {
			s = strings.TrimSuffix(s, suf.s)
			mult = suf.m
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || strings.ContainsAny(s, "eE") {
		return 0, fmt.Errorf("invalid quantity %q: want a number with an optional suffix (Ki, Mi, Gi, k, M, G, m), e.g. 512Mi or 0.5", string(q))
	}
	return f * mult, nil
}

// Validate reports whether q parses.
func (q Quantity) Validate() error { _, err := q.parse(); return err }

// Value is the quantity rounded up to an integer (bytes for memory).
func (q Quantity) Value() int64 { f, _ := q.parse(); return int64(math.Ceil(f)) }

// MilliValue is the quantity in thousandths (millicores for cpus).
func (q Quantity) MilliValue() int64 { f, _ := q.parse(); return int64(math.Ceil(f * 1000)) }

// Duration is a Go duration kept as written ("1h", "90s").
type Duration string

// Parse returns the duration.
func (d Duration) Parse() (time.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 90s, 10m or 1h", string(d))
	}
	if v <= 0 {
		return 0, fmt.Errorf("invalid duration %q: must be positive", string(d))
	}
	return v, nil
}
