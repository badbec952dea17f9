package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// How "msbctl image pull" shows its progress: bars redrawn in place on a
// terminal, plain lines otherwise (logs, CI).

// pullDisplay shows the progress of a pull.
type pullDisplay interface {
	update(p v1alpha1.PullProgress)
	finish()
}

// lineDisplay writes plain lines: one when a layer starts, at most one every
// lineInterval while it downloads, one when it is done.
type lineDisplay struct {
	w    io.Writer
	last map[string]time.Time
}

const lineInterval = 2 * time.Second

func (d *lineDisplay) update(p v1alpha1.PullProgress) {
	l := shortLayer(p.Layer)
	t := time.Now()
	last, seen := d.last[p.Layer]
	switch {
	case p.Complete && !seen:
		fmt.Fprintf(d.w, "%s: already present\n", l)
	case p.Complete:
		fmt.Fprintf(d.w, "%s: done\n", l)
	case !seen:
		fmt.Fprintf(d.w, "%s: downloading %s\n", l, humanSize(p.Total))
	case t.Sub(last) >= lineInterval:
		fmt.Fprintf(d.w, "%s: %s/%s\n", l, humanSize(p.Done), humanSize(p.Total))
	default:
		return
	}
	d.last[p.Layer] = t
}

func (d *lineDisplay) finish() {}

// barDisplay draws a progress bar per layer and redraws them in place.
type barDisplay struct {
	w      io.Writer
	order  []string
	state  map[string]barState
	drawn  int // lines drawn last time
	lastAt time.Time
}

type barState struct {
	p      v1alpha1.PullProgress
	cached bool // complete at first sight: the store held it
}

// barInterval is the least time between two redraws, except when a layer starts or
// completes.
const barInterval = 100 * time.Millisecond

const barWidth = 30

func (d *barDisplay) update(p v1alpha1.PullProgress) {
	if d.state == nil {
		d.state = map[string]barState{}
	}
	prev, seen := d.state[p.Layer]
	if !seen {
		d.order = append(d.order, p.Layer)
	}
	d.state[p.Layer] = barState{p: p, cached: (!seen && p.Complete) || prev.cached}
	if seen && !p.Complete && time.Since(d.lastAt) < barInterval {
		return
	}
	d.draw()
}

func (d *barDisplay) finish() {
	if len(d.order) > 0 {
		d.draw()
	}
}

func (d *barDisplay) draw() {
	d.lastAt = time.Now()
	var b strings.Builder
	if d.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.drawn) // back to the first bar
	}
	for _, layer := range d.order {
		b.WriteString("\r\x1b[2K")
		b.WriteString(barLine(layer, d.state[layer]))
		b.WriteString("\n")
	}
	d.drawn = len(d.order)
	io.WriteString(d.w, b.String())
}

// barLine is one layer's line: "sha256:0123456789ab  [=====>    ]  1.2MiB/4.0MiB".
func barLine(layer string, s barState) string {
	l := shortLayer(layer)
	if s.cached {
		return fmt.Sprintf("%s  already present", l)
	}
	p := s.p
	line := fmt.Sprintf("%s  [%s]  %s/%s", l, progressBar(p.Done, p.Total, p.Complete), humanSize(p.Done), humanSize(p.Total))
	if p.Complete {
		line += "  done"
	}
	return line
}

func progressBar(done, total int64, complete bool) string {
	n := 0
	switch {
	case complete:
		n = barWidth
	case total > 0:
		n = int(min(done, total) * barWidth / total)
	}
	if n >= barWidth {
		return strings.Repeat("=", barWidth)
	}
	if n == 0 {
		return strings.Repeat(" ", barWidth)
	}
	return strings.Repeat("=", n-1) + ">" + strings.Repeat(" ", barWidth-n)
}

// shortLayer abbreviates a digest to "sha256:" and 12 hex digits.
func shortLayer(d string) string {
	if algo, _, ok := strings.Cut(d, ":"); ok {
		return algo + ":" + shortDigest(d)
	}
	return shortDigest(d)
}

// humanSize renders bytes in binary units with one decimal: 512B, 4.2MiB, 1.0GiB.
func humanSize(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	v := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	// 1023.97KiB would print as 1024.0KiB: show it as 1.0MiB.
	if v >= 1023.95 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}
