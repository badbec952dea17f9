package netpolicy

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// maxAddrsPerName bounds the addresses pinned to one name. A DNS answer
// rarely carries more than a handful; past the bound the pin expiring first
// gives way.
const maxAddrsPerName = 32

// pinTable is one sandbox's pins: name -> addresses the DNS filter handed
// it, each with an expiry. It holds at most max names; pinning a new name
// past that evicts the name pinned longest ago (a list kept in pinning
// order), which is usually one already expired.
type pinTable struct {
	mu    sync.RWMutex
	max   int
	names map[string]*list.Element // of *pinName
	order *list.List               // front: pinned longest ago
}

type pinName struct {
	name  string
	addrs []pinAddr
}

type pinAddr struct {
	addr   netip.Addr
	expiry time.Time
}

func newPinTable(max int) *pinTable {
	return &pinTable{max: max, names: make(map[string]*list.Element), order: list.New()}
}

// pin records addr for name until expiry, extending an existing pin.
func (t *pinTable) pin(name string, addr netip.Addr, expiry time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.names[name]
	if ok {
		t.order.MoveToBack(el)
	} else {
		for t.order.Len() >= t.max {
			oldest := t.order.Front()
			delete(t.names, oldest.Value.(*pinName).name)
			t.order.Remove(oldest)
		}
		el = t.order.PushBack(&pinName{name: name})
		t.names[name] = el
	}
	pn := el.Value.(*pinName)
	soonest := -1
	for i := range pn.addrs {
		a := &pn.addrs[i]
		if a.addr == addr {
			if expiry.After(a.expiry) {
				a.expiry = expiry
			}
			return
		}
		if soonest < 0 || a.expiry.Before(pn.addrs[soonest].expiry) {
			soonest = i
		}
	}
	if len(pn.addrs) < maxAddrsPerName {
		pn.addrs = append(pn.addrs, pinAddr{addr, expiry})
		return
	}
	pn.addrs[soonest] = pinAddr{addr, expiry}
}

// has reports whether addr is pinned to name and not expired at now.
func (t *pinTable) has(name string, addr netip.Addr, now time.Time) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	el, ok := t.names[name]
	if !ok {
		return false
	}
	for _, a := range el.Value.(*pinName).addrs {
		if a.addr == addr {
			return now.Before(a.expiry)
		}
	}
	return false
}

// len is the number of names pinned (tests).
func (t *pinTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.names)
}
