// Package hostnet is the kernel side of sandbox networking: a network
// namespace per sandbox (a bind-mounted nsfs file under msbd's state
// directory, so it outlives msbd), a veth pair joining it to msbd's
// namespace, and one nftables table that sends a sandbox's DNS to msbd's
// DNS filter, its TCP to the transparent egress proxy, and drops
// everything else to and from sandbox interfaces. It also bounds what
// each sandbox may put in the host's conntrack table (Options
// MaxConnsPerSandbox and NewFlowsPerSecond), which is shared by the whole
// host.
//
// Every method acts on the network namespace of the calling OS thread
// (msbd's); tests call it from a thread locked into a namespace of their
// own.
package hostnet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// DefaultPool is the default --sandbox-cidr.
var DefaultPool = netip.MustParsePrefix("172.29.0.0/16")

// DefaultMark is the SO_MARK of the published-port forwarder ("MSB").
const DefaultMark uint32 = 0x4d5342

// Options configure a Net.
type Options struct {
	// StateDir is msbd's state directory: namespaces live in
	// StateDir/netns/<id>, their addresses in StateDir/netns/<id>.json.
	StateDir string
	// Pool is where sandbox subnets come from (DefaultPool if zero).
	Pool netip.Prefix
	// DNSPort is where msbd's DNS filter listens (UDP and TCP, all
	// addresses of msbd's namespace); ProxyPort the egress proxy.
	DNSPort, ProxyPort uint16
	// Mark is the SO_MARK of the published-port forwarder's sockets, the
	// only way into a sandbox (DefaultMark if zero).
	Mark uint32
	// TableName is the nft table in family inet ("msb" if empty).
	TableName string
	// Logf reports what New could not adopt (log.Printf if nil).
	Logf func(format string, args ...any)

	// MaxConnsPerSandbox caps the connections one sandbox may have in
	// msbd's conntrack table at once, counted per host veth; a new flow
	// beyond it is dropped before it is confirmed into the table
	// (DefaultMaxConnsPerSandbox if zero, no cap if negative).
	MaxConnsPerSandbox int
	// NewFlowsPerSecond and NewFlowBurst bound how fast one sandbox may
	// start flows (packets in conntrack state new: a TCP SYN, a UDP
	// datagram that is not yet answered); beyond them the packet is
	// dropped before its conntrack entry is confirmed
	// (DefaultNewFlowsPerSecond if zero, no limit if negative; the burst
	// is twice the rate if zero).
	NewFlowsPerSecond, NewFlowBurst int
}

// Per-sandbox conntrack bounds. Every flow a sandbox starts lands in
// msbd's namespace's conntrack table (nf_conntrack_max, 262144 on the
// test machines), and when that is full the kernel drops new connections
// of the whole host, so no sandbox may take more than a small share.
//
// DefaultMaxConnsPerSandbox: 1024 concurrent connections is far above
// what real workloads hold through one egress proxy (a parallel package
// install or a browser keeps tens to a few hundred; the e2e tests a
// handful), yet 256 sandboxes all at the cap would still fill no more
// than that table. Closed TCP connections (TIME_WAIT, CLOSE) stop
// counting at once, though their entries linger: that is what the rate
// below bounds.
//
// DefaultNewFlowsPerSecond and DefaultNewFlowBurst: 200 flows a second
// (after a burst of 400) is more than a build or crawler starting a
// connection per request needs, and it bounds what one sandbox can leave
// behind: with DNS entries living dnsTimeout (5 s) that is about 1,000
// UDP entries, and TCP entries that linger in TIME_WAIT (120 s) at most
// about 24,000 (9% of 262144). A security review's flood (221k new UDP
// flows to port 53 in 20 s) left 64,517 entries of 30 s each; under these
// defaults a like flood of 1.46M in 20 s got 4,033 flows through and
// never held more than 1,024 entries.
const (
	DefaultMaxConnsPerSandbox = 1024
	DefaultNewFlowsPerSecond  = 200
	DefaultNewFlowBurst       = 400
)

// Attachment is one sandbox's network.
type Attachment struct {
	ID string `json:"id"`
	// NetNSPath is the nsfs bind mount runc joins by path.
	NetNSPath string `json:"-"`
	// HostVeth is the host end: "msb" + 8 hex chars of the id's hash.
	HostVeth string `json:"hostVeth"`
	// HostIP is the host end's address: the sandbox's gateway and DNS
	// server, and where its redirected traffic lands.
	HostIP netip.Addr `json:"hostIP"`
	// IP is the sandbox's address (eth0 in its namespace).
	IP netip.Addr `json:"ip"`
	// Prefix is the /30 of the pair.
	Prefix netip.Prefix `json:"prefix"`
}

// Net manages the attachments of one msbd.
type Net struct {
	opts Options
	dir  string

	mu   sync.Mutex
	atts map[string]Attachment
	// reserved: attachments Reserve made that Attach has not completed
	// (no record, namespace or links yet).
	reserved map[string]bool
	used     map[netip.Addr]string // subnet address -> id
	next     netip.Addr            // next-fit cursor
}

// subnetBits is the size of each pair's subnet: network, host end,
// sandbox, broadcast.
const subnetBits = 30

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

// New checks the pool against the host's routes, (re)builds the nft table
// from scratch and adopts every attachment recorded under StateDir,
// repairing what is missing (after a reboot, the namespace and veth are
// recreated with the same addresses). An attachment that cannot be
// repaired is logged and kept, so Attach can retry it; its traffic is
// dropped meanwhile.
func New(opts Options) (*Net, error) {
	if opts.StateDir == "" || opts.DNSPort == 0 || opts.ProxyPort == 0 {
		return nil, errors.New("hostnet: StateDir, DNSPort and ProxyPort are required")
	}
	if !opts.Pool.IsValid() {
		opts.Pool = DefaultPool
	}
	if !opts.Pool.Addr().Is4() || opts.Pool.Bits() > subnetBits {
		return nil, fmt.Errorf("hostnet: sandbox pool %s: need an IPv4 prefix of /%d or larger", opts.Pool, subnetBits)
	}
	opts.Pool = opts.Pool.Masked()
	if opts.Mark == 0 {
		opts.Mark = DefaultMark
	}
	if opts.TableName == "" {
		opts.TableName = "msb"
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	if opts.MaxConnsPerSandbox == 0 {
		opts.MaxConnsPerSandbox = DefaultMaxConnsPerSandbox
	}
	if opts.NewFlowsPerSecond == 0 {
		opts.NewFlowsPerSecond = DefaultNewFlowsPerSecond
	}
	if opts.NewFlowBurst <= 0 {
		opts.NewFlowBurst = 2 * opts.NewFlowsPerSecond // DefaultNewFlowBurst by default
	}
	n := &Net{opts: opts, dir: filepath.Join(opts.StateDir, "netns"),
		atts: map[string]Attachment{}, reserved: map[string]bool{}, used: map[netip.Addr]string{}, next: opts.Pool.Addr()}
	if err := checkPool(opts.Pool); err != nil {
		return nil, err
	}
	if err := privateMount(n.dir); err != nil {
		return nil, err
	}
	if err := n.load(); err != nil {
		return nil, err
	}
	if err := n.buildTable(n.List()); err != nil {
		return nil, err
	}
	for _, a := range n.List() {
		if err := n.ensure(a); err != nil {
			opts.Logf("hostnet: adopting sandbox %s: %v", a.ID, err)
		}
	}
	return n, nil
}

// load reads the records; namespace files without one are leftovers of
// an interrupted Detach and are removed.
func (n *Net) load() error {
	ents, err := os.ReadDir(n.dir)
	if err != nil {
		return fmt.Errorf("hostnet: %w", err)
	}
	have := map[string]bool{}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		a, err := n.readRecord(id)
		if err != nil {
			n.opts.Logf("hostnet: skipping %s: %v", e.Name(), err)
			continue
		}
		have[id] = true
		n.atts[id] = a
		n.used[a.Prefix.Addr()] = id
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") && !strings.HasSuffix(e.Name(), ".tmp") && !have[e.Name()] {
			if err := removeNetNS(filepath.Join(n.dir, e.Name())); err != nil {
				n.opts.Logf("%v", err)
			}
		}
	}
	return nil
}

func (n *Net) readRecord(id string) (Attachment, error) {
	var a Attachment
	b, err := os.ReadFile(n.recordPath(id))
	if err == nil {
		err = json.Unmarshal(b, &a)
	}
	switch {
	case err != nil:
		return a, err
	case a.ID != id || a.HostVeth != vethName(id):
		return a, fmt.Errorf("record names %q / %q", a.ID, a.HostVeth)
	case !a.Prefix.IsValid() || a.Prefix.Bits() != subnetBits || !a.Prefix.Contains(a.IP) || !a.Prefix.Contains(a.HostIP):
		return a, fmt.Errorf("bad addresses %s %s %s", a.Prefix, a.HostIP, a.IP)
	case n.used[a.Prefix.Addr()] != "":
		return a, fmt.Errorf("subnet %s is also %s's", a.Prefix, n.used[a.Prefix.Addr()])
	}
	a.NetNSPath = n.nsPath(id)
	return a, nil
}

func (n *Net) nsPath(id string) string     { return filepath.Join(n.dir, id) }
func (n *Net) recordPath(id string) string { return filepath.Join(n.dir, id+".json") }

// vethName derives the host end's name from the id: IFNAMSIZ leaves no
// room for the id itself.
func vethName(id string) string {
	h := sha256.Sum256([]byte(id))
	return vethPrefix + hex.EncodeToString(h[:4])
}

// Reserve gives sandbox id its addresses and namespace path without
// making anything in the kernel (cheap: a map entry), so its files can be
// written while Attach makes the namespace and links. An existing
// attachment (or reservation) is returned as it is. A reservation Attach
// never completes is freed by Detach.
func (n *Net) Reserve(id string) (Attachment, error) {
	a, _, err := n.reserve(id)
	return a, err
}

// reserve is Reserve; fresh reports a reservation Attach has not completed.
func (n *Net) reserve(id string) (a Attachment, fresh bool, err error) {
	if !idRE.MatchString(id) {
		return Attachment{}, false, fmt.Errorf("hostnet: bad sandbox id %q", id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, ok := n.atts[id]; ok {
		return a, n.reserved[id], nil
	}
	veth := vethName(id)
	for _, o := range n.atts {
		if o.HostVeth == veth {
			return Attachment{}, false, fmt.Errorf("hostnet: sandboxes %s and %s hash to the same interface %s", o.ID, id, veth)
		}
	}
	sub, err := n.allocate(id)
	if err != nil {
		return Attachment{}, false, err
	}
	a = Attachment{ID: id, NetNSPath: n.nsPath(id), HostVeth: veth, Prefix: sub,
		HostIP: sub.Addr().Next(), IP: sub.Addr().Next().Next()}
	n.atts[id] = a
	n.reserved[id] = true
	return a, true, nil
}

// Attach gives sandbox id its namespace, veth pair and addresses (those
// Reserve gave it, if it did), or returns the existing attachment after
// making sure all of it is in place. Attaches of different sandboxes run
// at once; one sandbox's are the caller's to serialize.
func (n *Net) Attach(id string) (Attachment, error) {
	a, fresh, err := n.reserve(id)
	if err != nil {
		return Attachment{}, err
	}
	if !fresh {
		return a, n.ensure(a)
	}
	// Leftovers under this name (a Detach that failed halfway) would
	// otherwise be adopted as they are; a new attachment starts clean.
	err = errors.Join(deleteLink(a.HostVeth), removeNetNS(a.NetNSPath))
	// The record comes first so a crash halfway leaves something New
	// adopts (and repairs) rather than an orphan namespace.
	if err == nil {
		err = n.writeRecord(a)
	}
	if err == nil {
		err = n.setSource(a, true)
	}
	if err == nil {
		err = n.ensure(a)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		n.detach(id)
		return Attachment{}, err
	}
	delete(n.reserved, id)
	return a, nil
}

// allocate reserves the next free subnet after the cursor, so a freed
// address is reused as late as possible (the DNS filter's pins and the
// decision log are keyed by address).
func (n *Net) allocate(id string) (netip.Prefix, error) {
	start := n.next
	for p := start; ; {
		sub := netip.PrefixFrom(p, subnetBits)
		p = advance(p, n.opts.Pool)
		if n.used[sub.Addr()] == "" {
			n.used[sub.Addr()] = id
			n.next = p
			return sub, nil
		}
		if p == start {
			return netip.Prefix{}, fmt.Errorf("hostnet: sandbox pool %s is full", n.opts.Pool)
		}
	}
}

// advance steps to the next subnet, wrapping around the pool.
func advance(p netip.Addr, pool netip.Prefix) netip.Addr {
	b := p.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += 1 << (32 - subnetBits)
	q := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	if !pool.Contains(q) {
		return pool.Addr()
	}
	return q
}

// ensure makes the namespace and links of a exist and be configured.
func (n *Net) ensure(a Attachment) error {
	fresh := false
	if !isNetNS(a.NetNSPath) {
		if err := removeNetNS(a.NetNSPath); err != nil { // a stale file
			return err
		}
		if err := createNetNS(a.NetNSPath); err != nil {
			return err
		}
		fresh = true
	}
	return setupLinks(a, fresh)
}

func (n *Net) writeRecord(a Attachment) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	tmp := n.recordPath(a.ID) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("hostnet: %w", err)
	}
	if err := os.Rename(tmp, n.recordPath(a.ID)); err != nil {
		return fmt.Errorf("hostnet: %w", err)
	}
	return nil
}

// Get returns the attachment of sandbox id.
func (n *Net) Get(id string) (Attachment, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, ok := n.atts[id]
	return a, ok
}

// List returns every attachment, by id.
func (n *Net) List() []Attachment {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Attachment, 0, len(n.atts))
	for _, a := range n.atts {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Attachment) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Detach removes the veth pair, the namespace file and its record, the
// anti-spoofing element, and frees the addresses. Detaching what is not
// attached is not an error. A process still inside the namespace keeps
// it alive but cut off: stop the sandbox first.
func (n *Net) Detach(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("hostnet: bad sandbox id %q", id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.detach(id)
}

func (n *Net) detach(id string) error {
	var errs []error
	errs = append(errs, deleteLink(vethName(id)), removeNetNS(n.nsPath(id)))
	if a, ok := n.atts[id]; ok && !n.reserved[id] { // a reservation has no element yet
		if err := n.setSource(a, false); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(n.recordPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err // keep the addresses reserved: something is left
	}
	if a, ok := n.atts[id]; ok {
		delete(n.used, a.Prefix.Addr())
		delete(n.atts, id)
		delete(n.reserved, id)
	}
	return nil
}

// Close releases nothing in the kernel: sandboxes outlive msbd, and the
// next New adopts them.
func (n *Net) Close() error { return nil }
