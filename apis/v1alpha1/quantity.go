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
	// Only plain decimals: no sign, exponent, hex, underscores, Inf or NaN,
	// which strconv.ParseFloat would otherwise accept.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !plainDecimal(s) {
		return 0, fmt.Errorf("invalid quantity %q: want a number with an optional suffix (Ki, Mi, Gi, k, M, G, m), e.g. 512Mi or 0.5", string(q))
	}
	// Keep MilliValue within int64.
	if f*mult > maxQuantity {
		return 0, fmt.Errorf("invalid quantity %q: too large (at most 8Pi)", string(q))
	}
	return f * mult, nil
}

// maxQuantity keeps MilliValue of any valid quantity within int64.
const maxQuantity = 1 << 53

// plainDecimal reports whether s is digits with at most one decimal point
// and at least one digit ("1", "0.5", ".5", "2.").
func plainDecimal(s string) bool {
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
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
