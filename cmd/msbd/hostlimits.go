package main

import (
	"fmt"
	"log/slog"
	"net/netip"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/reconciler"
	"msb.dev/msb/vmdriver"
)

// hostLimits are the host budgets sandbox starts draw on: what the drivers
// report, and the sandbox address pool (a /30 each) when networking is on.
type hostLimits struct {
	drivers *vmdriver.Set
	pool    netip.Prefix // invalid without networking
	network reconciler.NetworkAttachments
}

func (l *hostLimits) read() []vmdriver.HostLimit {
	var out []vmdriver.HostLimit
	for _, d := range l.drivers.All() {
		if hl, ok := d.(vmdriver.HostLimiter); ok {
			out = append(out, hl.HostLimits()...)
		}
	}
	if l.pool.IsValid() && l.pool.Addr().Is4() && l.pool.Bits() <= 30 {
		used := int64(-1)
		if l.network != nil {
			used = int64(len(l.network.AttachedIDs()))
		}
		out = append(out, vmdriver.HostLimit{Name: "--sandbox-cidr " + l.pool.String(), Limit: int64(1) << (30 - l.pool.Bits()), Used: used, PerSandbox: 1,
			Note: "sandbox networks (veth pair and a /30 each)"})
	}
	return out
}

// room is how many more sandboxes every limit leaves room for, and the
// tightest one; -1 when none bounds them.
func room(limits []vmdriver.HostLimit) (int64, string) {
	n, by := int64(-1), ""
	for _, l := range limits {
		if r := l.Room(); r >= 0 && (n < 0 || r < n) {
			n, by = r, l.Name
		}
	}
	return n, by
}

// log says at start how many sandboxes the host limits leave room for.
func (l *hostLimits) log(log *slog.Logger) {
	n, by := room(l.read())
	if n >= 0 {
		log.Info("host limits", "roomForSandboxes", n, "tightest", by)
	}
}

// addInfo adds the "host limits" section to GET /info: each limit, what a
// sandbox takes of it and the room it leaves, and the total first.
func (l *hostLimits) addInfo(h *v1alpha1.HostInfo) {
	limits := l.read()
	const section = "host limits"
	if n, by := room(limits); n >= 0 {
		h.Add(section, v1alpha1.InfoItem{Name: "room for sandboxes", Value: fmt.Sprintf("%d more", n), OK: n > 0,
			Detail: "the tightest limit is " + by + "; raise it to run more"})
	}
	for _, lim := range limits {
		item := v1alpha1.InfoItem{Name: lim.Name, OK: true, Detail: lim.Note}
		switch {
		case lim.Limit <= 0:
			item.Value = "no limit"
		case lim.Used >= 0:
			item.Value = fmt.Sprintf("%d (%d in use)", lim.Limit, lim.Used)
		default:
			item.Value = fmt.Sprintf("%d", lim.Limit)
		}
		if r := lim.Room(); r >= 0 {
			item.Value += fmt.Sprintf(", %d per sandbox: room for %d", lim.PerSandbox, r)
			item.OK = r > 0
		}
		h.Add(section, item)
	}
}
