package container

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// Each start runs runc in a mount namespace of its own, made for that
// start and gone when it ends. The sandbox's overlay, its sysfs and the
// staged volumes are mounted there, not in msbd's namespace: runc copies
// the mount table it runs in into the container and reads it several times
// over, so every mount a sandbox left in the host's table made every later
// start slower (600 extra mounts, as 100 sandboxes left, took a bare
// `runc run -d` from 50 to 71 ms here). The host's table now grows only by
// what msbd itself needs to reach: the sandbox's disk (the agent's
// directory and log) and its network namespace. The user namespace is made
// afresh for each start too (owned by the sandbox's uid, see userns.go):
// the running sandbox holds it, and the next run gets its own.
//
// The container keeps its own copies of those mounts for as long as it
// runs; nothing needs unmounting after it stops.

// inStartNS runs fn on a thread of its own in a new mount namespace (a
// slave copy of msbd's, so nothing mounted there reaches the host) in
// which spec's root filesystem is mounted, and, when spec names a network
// namespace, in that namespace with its sysfs mounted. A process fn starts
// from that thread (runc) starts in both.
func (d *Driver) inStartNS(spec vmdriver.Spec, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread's namespaces are changed for good and
		// it ends with this goroutine, taking the mount namespace along.
		runtime.LockOSThread()
		errc <- d.enterStartNS(spec, fn)
	}()
	return <-errc
}

func (d *Driver) enterStartNS(spec vmdriver.Spec, fn func() error) error {
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("sandbox %s: the start's mount namespace: %w", spec.ID, err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("sandbox %s: the start's mount namespace: %w", spec.ID, err)
	}
	ids, err := d.sandboxIDs(spec)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	// The sandbox's user namespace (a helper process, milliseconds) was
	// begun by Create, or is begun now, while the overlay is mounted; runc
	// joins it by the path it is bound on here.
	u := d.takeUserNS(spec.ID)
	early := u != nil
	if !early {
		u = d.beginUserNS(spec.ID, ids, false)
	}
	err = d.mountRootfsOnce(spec, ids)
	if err == nil {
		err = d.bindAgentDirHere(spec.ID)
	}
	<-u.done
	if u.err != nil && early {
		// What failed then (at Create) gets one more try now.
		u = d.beginUserNS(spec.ID, ids, false)
		<-u.done
	}
	if u.err != nil {
		return fmt.Errorf("sandbox %s: %w", spec.ID, u.err)
	}
	defer u.h.stop()
	if err != nil {
		return err
	}
	if err := unmountIfMounted(d.userNSFile(spec.ID)); err != nil { // one an older msbd pinned
		return fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if err := u.h.bind(d.userNSFile(spec.ID)); err != nil {
		return fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if spec.NetNSPath != "" {
		ns, err := unix.Open(spec.NetNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("sandbox %s: network namespace: %w", spec.ID, err)
		}
		err = unix.Setns(ns, unix.CLONE_NEWNET)
		unix.Close(ns)
		if err != nil {
			return fmt.Errorf("sandbox %s: entering its network namespace: %w", spec.ID, err)
		}
		if err := mountSysfsHere(d.sysfsDir(spec.ID)); err != nil {
			return fmt.Errorf("sandbox %s: %w", spec.ID, err)
		}
	}
	return fn()
}

// pendingUserNS is a sandbox user namespace being made (done closes when
// h or err is set).
type pendingUserNS struct {
	done chan struct{}
	h    *holder
	err  error
}

// beginUserNS starts making sandbox id's user namespace (owned by its
// uid, see userns.go) in the background; with keep, Start takes it later
// (takeUserNS), replacing one begun before.
func (d *Driver) beginUserNS(id string, ids sandboxIDs, keep bool) *pendingUserNS {
	p := &pendingUserNS{done: make(chan struct{})}
	go func() {
		p.h, p.err = newUserNS(ids.Owner, ids.OwnerGID, idMap{0, ids.UID, ids.Size}, idMap{0, ids.GID, ids.Size}, sandboxUserLimits())
		close(p.done)
	}()
	if keep {
		d.userNSMu.Lock()
		old := d.userNS[id]
		if d.userNS == nil {
			d.userNS = map[string]*pendingUserNS{}
		}
		d.userNS[id] = p
		d.userNSMu.Unlock()
		old.release()
	}
	return p
}

// takeUserNS hands Start the user namespace Create began for id, if any.
func (d *Driver) takeUserNS(id string) *pendingUserNS {
	d.userNSMu.Lock()
	defer d.userNSMu.Unlock()
	p := d.userNS[id]
	delete(d.userNS, id)
	return p
}

// release ends the helper of a user namespace no start took.
func (p *pendingUserNS) release() {
	if p == nil {
		return
	}
	<-p.done
	if p.h != nil {
		p.h.stop()
	}
}

// bindAgentDirHere binds sandbox id's agent directory, when it is on its
// disk, where runc looks for it.
func (d *Driver) bindAgentDirHere(id string) error {
	src := d.agentDir(id)
	if src == d.agentMountPoint(id) {
		return nil
	}
	if err := bindAgentDir(src, d.agentMountPoint(id)); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	return nil
}

// mountRootfsOnce mounts spec's overlay (its image layers, idmapped to its
// range, under its writable layer) on its rootfs directory unless
// something is mounted there (a sandbox an older msbd started has it in
// the host's table).
func (d *Driver) mountRootfsOnce(spec vmdriver.Spec, ids sandboxIDs) error {
	rootfs := d.rootfsDir(spec.ID)
	mounted, err := isMountPoint(rootfs)
	if err != nil || mounted {
		return err
	}
	upper, work := d.writableLayer(spec.ID)
	if err := d.mountRootfs(spec.Layers, ids, upper, work, rootfs); err != nil {
		return fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	return nil
}
