package krun

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

// Calls through symbols found by dlsym, with the prototypes of libkrun's
// public header (include/libkrun.h).
static int32_t krun_call_v(void *f) { return ((int32_t (*)(void))f)(); }
static int32_t krun_call_u(void *f, uint32_t a) { return ((int32_t (*)(uint32_t))f)(a); }
static int32_t krun_call_u64(void *f, uint64_t a) { return ((int32_t (*)(uint64_t))f)(a); }
static int32_t krun_call_u_u8_u(void *f, uint32_t a, uint8_t b, uint32_t c) {
	return ((int32_t (*)(uint32_t, uint8_t, uint32_t))f)(a, b, c);
}
static int32_t krun_call_u_s(void *f, uint32_t a, const char *s) {
	return ((int32_t (*)(uint32_t, const char *))f)(a, s);
}
static int32_t krun_call_u_arr(void *f, uint32_t a, char **arr) {
	return ((int32_t (*)(uint32_t, const char *const *))f)(a, (const char *const *)arr);
}
static int32_t krun_call_u_s_arr_arr(void *f, uint32_t a, const char *s, char **x, char **y) {
	return ((int32_t (*)(uint32_t, const char *, const char *const *, const char *const *))f)(
		a, s, (const char *const *)x, (const char *const *)y);
}
static int32_t krun_call_u_u_s_b(void *f, uint32_t a, uint32_t b, const char *s, bool l) {
	return ((int32_t (*)(uint32_t, uint32_t, const char *, bool))f)(a, b, s, l);
}
static int32_t krun_call_u_uid(void *f, uint32_t a, uint32_t id) {
	return ((int32_t (*)(uint32_t, uint32_t))f)(a, id);
}
static const char *krun_dlerror(void) { return dlerror(); }
static const char *krun_sym_file(void *sym) {
	Dl_info info;
	if (dladdr(sym, &info) == 0) return NULL;
	return info.dli_fname;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// DefaultLibrary is what Load opens when given no path: the loader's search
// (LD_LIBRARY_PATH, ld.so.cache, the default directories) for libkrun's soname.
const DefaultLibrary = "libkrun.so.1"

// Required are the symbols the driver and its runner call; a libkrun without
// one of them cannot run msb's microVMs (libkrun ≥ 1.12 has them all).
var Required = []string{
	"krun_set_log_level",
	"krun_create_ctx",
	"krun_free_ctx",
	"krun_set_vm_config",
	"krun_set_root",
	"krun_set_workdir",
	"krun_set_exec",
	"krun_set_port_map",
	"krun_add_vsock_port2",
	"krun_set_console_output",
	"krun_start_enter",
}

// Optional are symbols used when present: reporting (vCPU limit, build
// features, nested virtualisation) and refinements the driver can do
// without.
var Optional = []string{
	"krun_get_max_vcpus",
	"krun_has_feature",
	"krun_check_nested_virt",
	"krun_set_rlimits",
	"krun_setuid",
	"krun_setgid",
	"krun_disable_implicit_vsock",
	"krun_add_vsock",
}

// TSI (transparent socket impersonation) features of krun_add_vsock, from
// libkrun.h: which guest sockets the guest kernel hands to the VMM, which
// opens them on the host in the runner's network namespace.
const (
	TSIHijackInet uint32 = 1 << 0 // KRUN_TSI_HIJACK_INET
	TSIHijackUnix uint32 = 1 << 1 // KRUN_TSI_HIJACK_UNIX
)

// MissingSymbolsError says which required symbols a library lacks.
type MissingSymbolsError struct {
	Path    string
	Symbols []string
}

func (e *MissingSymbolsError) Error() string {
	return fmt.Sprintf("libkrun at %s lacks %s (msb needs libkrun 1.12 or newer)", e.Path, strings.Join(e.Symbols, ", "))
}

// Lib is a loaded libkrun. Its methods are thin: each converts Go values to
// C, calls the symbol and turns a negative return into an Errno. A Lib is
// never unloaded (libkrun keeps threads and global state).
type Lib struct {
	// Path is the file the loader opened (for "libkrun.so.1", where it found it).
	Path string
	syms map[string]unsafe.Pointer
}

var (
	loadMu sync.Mutex
	loaded = map[string]*Lib{}
)

// Load opens libkrun at path (DefaultLibrary when empty) and looks up every
// Required and Optional symbol. It fails when the library cannot be opened
// or lacks a required symbol (a *MissingSymbolsError); optional ones may be
// missing. Loading the same path again returns the same Lib.
func Load(path string) (*Lib, error) {
	if path == "" {
		path = DefaultLibrary
	}
	loadMu.Lock()
	defer loadMu.Unlock()
	if l := loaded[path]; l != nil {
		return l, nil
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	C.krun_dlerror() // clear
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("loading libkrun %s: %s", path, C.GoString(C.krun_dlerror()))
	}
	l := &Lib{Path: path, syms: map[string]unsafe.Pointer{}}
	var missing []string
	for _, name := range append(append([]string{}, Required...), Optional...) {
		cname := C.CString(name)
		p := C.dlsym(h, cname)
		C.free(unsafe.Pointer(cname))
		if p != nil {
			l.syms[name] = p
		}
	}
	for _, name := range Required {
		if l.syms[name] == nil {
			missing = append(missing, name)
		}
	}
	if p := l.syms["krun_create_ctx"]; p != nil {
		if f := C.krun_sym_file(p); f != nil {
			l.Path = C.GoString(f)
		}
	}
	if len(missing) > 0 {
		C.dlclose(h)
		return nil, &MissingSymbolsError{Path: l.Path, Symbols: missing}
	}
	loaded[path] = l
	return l, nil
}

// Has reports whether the library exports symbol name (Required or Optional).
func (l *Lib) Has(name string) bool { return l.syms[name] != nil }

// MissingOptional lists the Optional symbols the library lacks.
func (l *Lib) MissingOptional() []string {
	var out []string
	for _, name := range Optional {
		if !l.Has(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (l *Lib) sym(name string) (unsafe.Pointer, error) {
	p := l.syms[name]
	if p == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotSupported)
	}
	return p, nil
}

// ErrNotSupported is returned for an optional symbol the library lacks.
var ErrNotSupported = errors.New("not supported by this libkrun")

// result turns libkrun's convention (negative errno on failure) into an error.
func result(name string, rc C.int32_t) (int32, error) {
	if rc < 0 {
		return int32(rc), fmt.Errorf("%s: %w", name, syscall.Errno(-rc))
	}
	return int32(rc), nil
}

func (l *Lib) callU(name string, a uint32) error {
	p, err := l.sym(name)
	if err != nil {
		return err
	}
	_, err = result(name, C.krun_call_u(p, C.uint32_t(a)))
	return err
}

func (l *Lib) callUS(name string, ctx uint32, s string) error {
	p, err := l.sym(name)
	if err != nil {
		return err
	}
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	_, err = result(name, C.krun_call_u_s(p, C.uint32_t(ctx), cs))
	return err
}

// SetLogLevel sets libkrun's log level (0 off … 5 trace).
func (l *Lib) SetLogLevel(level uint32) error { return l.callU("krun_set_log_level", level) }

// CreateCtx creates a configuration context.
func (l *Lib) CreateCtx() (uint32, error) {
	p, err := l.sym("krun_create_ctx")
	if err != nil {
		return 0, err
	}
	id, err := result("krun_create_ctx", C.krun_call_v(p))
	return uint32(id), err
}

// FreeCtx frees a context that will not be started.
func (l *Lib) FreeCtx(ctx uint32) error { return l.callU("krun_free_ctx", ctx) }

// SetVMConfig sets the vCPUs and the RAM in MiB.
func (l *Lib) SetVMConfig(ctx uint32, vcpus uint8, ramMiB uint32) error {
	p, err := l.sym("krun_set_vm_config")
	if err != nil {
		return err
	}
	_, err = result("krun_set_vm_config", C.krun_call_u_u8_u(p, C.uint32_t(ctx), C.uint8_t(vcpus), C.uint32_t(ramMiB)))
	return err
}

// SetRoot sets the host directory shared over virtio-fs as the guest's root.
func (l *Lib) SetRoot(ctx uint32, path string) error { return l.callUS("krun_set_root", ctx, path) }

// SetWorkdir sets the workload's working directory, inside the root.
func (l *Lib) SetWorkdir(ctx uint32, path string) error {
	return l.callUS("krun_set_workdir", ctx, path)
}

// SetConsoleOutput sends the guest console to a host file.
func (l *Lib) SetConsoleOutput(ctx uint32, path string) error {
	return l.callUS("krun_set_console_output", ctx, path)
}

// SetExec sets the workload: its path inside the root, argv (without the
// program name, as libkrun takes it) and environment. env is always passed
// as an array, empty or not: libkrun copies the caller's own environment
// into the guest when it gets NULL.
func (l *Lib) SetExec(ctx uint32, path string, argv, env []string) error {
	p, err := l.sym("krun_set_exec")
	if err != nil {
		return err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	cargv, freeArgv := cStrings(argv)
	defer freeArgv()
	cenv, freeEnv := cStrings(env)
	defer freeEnv()
	_, err = result("krun_set_exec", C.krun_call_u_s_arr_arr(p, C.uint32_t(ctx), cpath, cargv, cenv))
	return err
}

// SetPortMap sets the host:guest TCP ports published. It always passes an
// array, empty when ports is: libkrun exposes every guest listener on NULL.
func (l *Lib) SetPortMap(ctx uint32, ports []string) error {
	p, err := l.sym("krun_set_port_map")
	if err != nil {
		return err
	}
	arr, free := cStrings(ports)
	defer free()
	_, err = result("krun_set_port_map", C.krun_call_u_arr(p, C.uint32_t(ctx), arr))
	return err
}

// SetRlimits sets guest rlimits ("RESOURCE=CUR:MAX"); optional.
func (l *Lib) SetRlimits(ctx uint32, rlimits []string) error {
	p, err := l.sym("krun_set_rlimits")
	if err != nil {
		return err
	}
	arr, free := cStrings(rlimits)
	defer free()
	_, err = result("krun_set_rlimits", C.krun_call_u_arr(p, C.uint32_t(ctx), arr))
	return err
}

// AddVsockPort maps guest vsock port to the host unix socket path; with
// listen the guest listens and libkrun accepts host connections on path.
func (l *Lib) AddVsockPort(ctx, port uint32, path string, listen bool) error {
	p, err := l.sym("krun_add_vsock_port2")
	if err != nil {
		return err
	}
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	_, err = result("krun_add_vsock_port2", C.krun_call_u_u_s_b(p, C.uint32_t(ctx), C.uint32_t(port), cs, C.bool(listen)))
	return err
}

// SetUID and SetGID set the ids libkrun switches to right before the VM
// runs; optional.
func (l *Lib) SetUID(ctx, uid uint32) error { return l.callUID("krun_setuid", ctx, uid) }

// SetGID: see SetUID.
func (l *Lib) SetGID(ctx, gid uint32) error { return l.callUID("krun_setgid", ctx, gid) }

func (l *Lib) callUID(name string, ctx, id uint32) error {
	p, err := l.sym(name)
	if err != nil {
		return err
	}
	_, err = result(name, C.krun_call_u_uid(p, C.uint32_t(ctx), C.uint32_t(id)))
	return err
}

// DisableImplicitVsock stops libkrun from making its vsock device with the
// TSI features its heuristics choose; AddVsock then makes it with exactly
// tsiFeatures (TSIHijackInet, TSIHijackUnix, or 0). Both optional.
func (l *Lib) DisableImplicitVsock(ctx uint32) error {
	return l.callU("krun_disable_implicit_vsock", ctx)
}

// AddVsock: see DisableImplicitVsock.
func (l *Lib) AddVsock(ctx, tsiFeatures uint32) error {
	return l.callUID("krun_add_vsock", ctx, tsiFeatures)
}

// StartEnter boots the VM. On success it does not return: the process
// becomes the VMM and exits when the guest's workload ends.
func (l *Lib) StartEnter(ctx uint32) error {
	p, err := l.sym("krun_start_enter")
	if err != nil {
		return err
	}
	_, err = result("krun_start_enter", C.krun_call_u(p, C.uint32_t(ctx)))
	if err == nil {
		err = errors.New("krun_start_enter returned")
	}
	return err
}

// MaxVCPUs is the hypervisor's vCPU limit; optional.
func (l *Lib) MaxVCPUs() (int, error) {
	p, err := l.sym("krun_get_max_vcpus")
	if err != nil {
		return 0, err
	}
	n, err := result("krun_get_max_vcpus", C.krun_call_v(p))
	return int(n), err
}

// HasFeature reports whether libkrun was built with feature (KRUN_FEATURE_*); optional.
func (l *Lib) HasFeature(feature uint64) (bool, error) {
	p, err := l.sym("krun_has_feature")
	if err != nil {
		return false, err
	}
	n, err := result("krun_has_feature", C.krun_call_u64(p, C.uint64_t(feature)))
	return n == 1, err
}

// NestedVirt reports whether the host supports nested virtualisation; optional.
func (l *Lib) NestedVirt() (bool, error) {
	p, err := l.sym("krun_check_nested_virt")
	if err != nil {
		return false, err
	}
	n, err := result("krun_check_nested_virt", C.krun_call_v(p))
	return n == 1, err
}

// preload loads soname for good (RTLD_GLOBAL) and reports whether the
// loader found it: a later dlopen of the same soname (libkrun's of
// libkrunfw at boot) then finds it loaded, without looking at the file
// system, which the runner no longer sees by then.
func preload(soname string) bool {
	cname := C.CString(soname)
	defer C.free(unsafe.Pointer(cname))
	return C.dlopen(cname, C.RTLD_NOW|C.RTLD_GLOBAL) != nil
}

// locate dlopens soname, reports the file the loader found (through sym,
// when the library has it) and closes it again.
func locate(soname, sym string) (string, bool) {
	cname := C.CString(soname)
	defer C.free(unsafe.Pointer(cname))
	h := C.dlopen(cname, C.RTLD_LAZY|C.RTLD_LOCAL)
	if h == nil {
		return "", false
	}
	defer C.dlclose(h)
	csym := C.CString(sym)
	defer C.free(unsafe.Pointer(csym))
	if p := C.dlsym(h, csym); p != nil {
		if f := C.krun_sym_file(p); f != nil {
			return C.GoString(f), true
		}
	}
	return soname, true
}

// cStrings returns a NULL-terminated array of C strings (never NULL itself,
// also for an empty list) and the function that frees it all.
func cStrings(ss []string) (**C.char, func()) {
	ptrSize := unsafe.Sizeof((*C.char)(nil))
	arr := (**C.char)(C.calloc(C.size_t(len(ss)+1), C.size_t(ptrSize)))
	elems := unsafe.Slice(arr, len(ss)+1)
	for i, s := range ss {
		elems[i] = C.CString(s)
	}
	elems[len(ss)] = nil
	return arr, func() {
		for i := range ss {
			C.free(unsafe.Pointer(elems[i]))
		}
		C.free(unsafe.Pointer(arr))
	}
}
