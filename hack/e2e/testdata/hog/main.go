// Command hog is a hostile program for the isolation end-to-end tests. It is
// built static by the test and run inside sandboxes and on the host.
//
//	hog hold FILE   take every inotify instance, POSIX message queue byte and
//	                queued real-time signal this process can, write the counts
//	                to FILE and keep them until killed
//	hog probe       take one of each and say which worked ("inotify ok ...")
//	hog read FILE   print FILE (run set-id to show what its owner may read)
//	hog fill FILE   write zeros to FILE until a write fails; print the error
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The real-time signal queued and kept blocked.
const sig = 36 // SIGRTMIN+2 (glibc's SIGRTMIN is 34)

// mqAttr is struct mq_attr.
type mqAttr struct {
	flags, maxmsg, msgsize, curmsgs int64
	_                               [4]int64
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hog hold FILE | probe | read FILE | fill FILE")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "hold":
		hold(os.Args[2])
	case "probe":
		fmt.Println(probe())
	case "read":
		b, err := os.ReadFile(os.Args[2])
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Stdout.Write(b)
	case "fill":
		fill(os.Args[2])
	}
}

func inotifyOne() error {
	_, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	return err
}

var mqSeq int

// mqOne opens a new queue of 10 messages of 8 KiB (80 KiB charged).
func mqOne() error {
	mqSeq++
	name, err := unix.BytePtrFromString(fmt.Sprintf("hog-%d-%d", os.Getpid(), mqSeq))
	if err != nil {
		return err
	}
	attr := mqAttr{maxmsg: 10, msgsize: 8192}
	fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)), unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, 0o600, uintptr(unsafe.Pointer(&attr)), 0, 0)
	if e != 0 {
		return e
	}
	unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0) // the descriptor keeps it
	_ = fd
	return nil
}

// blockSig blocks sig on the calling (locked) thread.
func blockSig() error {
	set := uint64(1) << (sig - 1)
	_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// sigOne queues sig to the calling thread, where it stays pending.
func sigOne() error {
	var info [128]byte
	*(*int32)(unsafe.Pointer(&info[0])) = sig
	*(*int32)(unsafe.Pointer(&info[8])) = -1 // SI_QUEUE
	_, _, e := unix.RawSyscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(os.Getpid()), uintptr(unix.Gettid()), sig, uintptr(unsafe.Pointer(&info[0])), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// takeAll calls one until it fails (at most limit times) and says how far it got.
func takeAll(name string, one func() error, limit int) string {
	n := 0
	var err error
	for n < limit {
		if err = one(); err != nil {
			break
		}
		n++
	}
	return fmt.Sprintf("%s %d %v", name, n, err)
}

func hold(file string) {
	runtime.LockOSThread()
	var lines []string
	lines = append(lines, takeAll("inotify", inotifyOne, 1<<20))
	lines = append(lines, takeAll("mqueue", mqOne, 1<<20))
	if err := blockSig(); err != nil {
		lines = append(lines, "signals 0 "+err.Error())
	} else {
		lines = append(lines, takeAll("signals", sigOne, 1<<22))
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for { // keep everything (this goroutine keeps its thread)
		unix.Pause()
	}
}

func probe() string {
	runtime.LockOSThread()
	var out []string
	for _, c := range []struct {
		name string
		one  func() error
	}{{"inotify", inotifyOne}, {"mqueue", mqOne}, {"signals", func() error {
		if err := blockSig(); err != nil {
			return err
		}
		return sigOne()
	}}} {
		if err := c.one(); err != nil {
			out = append(out, c.name+" "+err.Error())
		} else {
			out = append(out, c.name+" ok")
		}
	}
	return strings.Join(out, "; ")
}

func fill(file string) {
	f, err := os.Create(file)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if err == nil {
			continue
		}
		fmt.Printf("wrote %d: %v\n", n, err)
		return
	}
}
