package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file is msbctl's flag parser. Unlike the standard library's flag
// package it lets flags and positional arguments mix, as kubectl does:
//
//	msbctl get sb x -o yaml   ==   msbctl -o yaml get sb x
//
// Long flags take --name=value or --name value; short flags take -o yaml,
// -o=yaml or -oyaml; boolean short flags cluster (-it). "--" ends the flags.

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// flagValue is what a flag sets.
type flagValue interface {
	Set(string) error
	String() string
}

type flagDef struct {
	long, short string
	usage       string
	value       flagValue
	isBool      bool
	// noOptVal, when set, is the value a flag given without "=value" takes
	// (--dry-run means --dry-run=client); such a flag never consumes the next argument.
	noOptVal string
	argName  string
	defText  string
}

// flagSet is the set of flags one command accepts.
type flagSet struct {
	cmd   string
	defs  []*flagDef
	long  map[string]*flagDef
	short map[string]*flagDef
	// stopAfter, when > 0, ends flag parsing once that many positional
	// arguments were seen (exec NAME CMD -la: -la belongs to CMD).
	stopAfter int
	// dashAt is the index in args() where "--" was, or -1.
	dashAt int
	pos    []string
	help   bool
	seen   map[string]bool // long names of the flags given
}

func newFlagSet(cmd string) *flagSet {
	fs := &flagSet{cmd: cmd, long: map[string]*flagDef{}, short: map[string]*flagDef{}, dashAt: -1}
	fs.boolVar(&fs.help, "help", "h", false, "show help for this command")
	return fs
}

func (fs *flagSet) add(d *flagDef) {
	if _, dup := fs.long[d.long]; dup {
		panic("msbctl: duplicate flag --" + d.long)
	}
	fs.defs = append(fs.defs, d)
	fs.long[d.long] = d
	if d.short != "" {
		fs.short[d.short] = d
	}
}

type stringValue struct{ p *string }

func (v stringValue) Set(s string) error { *v.p = s; return nil }
func (v stringValue) String() string     { return *v.p }

type boolValue struct{ p *bool }

func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false, got %q", s)
	}
	*v.p = b
	return nil
}
func (v boolValue) String() string { return strconv.FormatBool(*v.p) }

type durationValue struct{ p *time.Duration }

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		// kubectl accepts a bare number of seconds too.
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return fmt.Errorf("want a duration like 30s, 5m or 1h, got %q", s)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return fmt.Errorf("want a non-negative duration, got %q", s)
	}
	*v.p = d
	return nil
}
func (v durationValue) String() string { return v.p.String() }

type sliceValue struct{ p *[]string }

func (v sliceValue) Set(s string) error { *v.p = append(*v.p, s); return nil }
func (v sliceValue) String() string     { return strings.Join(*v.p, ",") }

func (fs *flagSet) stringVar(p *string, long, short, def, usage string) {
	*p = def
	fs.add(&flagDef{long: long, short: short, usage: usage, value: stringValue{p}, argName: "string", defText: def})
}

func (fs *flagSet) boolVar(p *bool, long, short string, def bool, usage string) {
	*p = def
	dt := ""
	if def {
		dt = "true"
	}
	fs.add(&flagDef{long: long, short: short, usage: usage, value: boolValue{p}, isBool: true, defText: dt})
}

func (fs *flagSet) durationVar(p *time.Duration, long, short string, def time.Duration, usage string) {
	*p = def
	fs.add(&flagDef{long: long, short: short, usage: usage, value: durationValue{p}, argName: "duration", defText: def.String()})
}

func (fs *flagSet) sliceVar(p *[]string, long, short, usage string) {
	fs.add(&flagDef{long: long, short: short, usage: usage, value: sliceValue{p}, argName: "string"})
}

// optStringVar is a string flag whose value is optional: given bare it takes noOpt.
func (fs *flagSet) optStringVar(p *string, long, def, noOpt, usage string) {
	*p = def
	fs.add(&flagDef{long: long, usage: usage, value: stringValue{p}, noOptVal: noOpt, argName: "string", defText: def})
}

// takesValue says whether a flag consumes the next argument when given
// without "=value". Unknown flags are reported as false.
func (fs *flagSet) takesValue(tok string) bool {
	var d *flagDef
	if strings.HasPrefix(tok, "--") {
		if strings.Contains(tok, "=") {
			return false
		}
		d = fs.long[tok[2:]]
	} else {
		if len(tok) != 2 {
			// -oyaml carries its value; -it clusters booleans.
			return false
		}
		d = fs.short[tok[1:]]
	}
	return d != nil && !d.isBool && d.noOptVal == ""
}

func (fs *flagSet) unknown(flag string) error {
	if fs.cmd == "" {
		return usagef("unknown flag %s; see 'msbctl --help'", flag)
	}
	return usagef("unknown flag %s for %q; see 'msbctl %s --help'", flag, fs.cmd, fs.cmd)
}

func (fs *flagSet) set(d *flagDef, name, val string) error {
	if fs.seen == nil {
		fs.seen = map[string]bool{}
	}
	fs.seen[d.long] = true
	if err := d.value.Set(val); err != nil {
		return usagef("invalid value for %s: %v; see 'msbctl %s --help'", name, err, fs.cmd)
	}
	return nil
}

// parse reads args, setting flags and collecting positional arguments.
func (fs *flagSet) parse(args []string) error {
	fs.pos = nil
	fs.dashAt = -1
	for i := 0; i < len(args); i++ {
		a := args[i]
		if fs.stopAfter > 0 && len(fs.pos) >= fs.stopAfter {
			if a == "--" {
				fs.dashAt = len(fs.pos)
				i++
			}
			fs.pos = append(fs.pos, args[i:]...)
			return nil
		}
		switch {
		case a == "--":
			fs.dashAt = len(fs.pos)
			fs.pos = append(fs.pos, args[i+1:]...)
			return nil
		case a == "-" || !strings.HasPrefix(a, "-"):
			fs.pos = append(fs.pos, a)
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			d := fs.long[name]
			if d == nil {
				return fs.unknown("--" + name)
			}
			switch {
			case hasVal:
			case d.isBool:
				val = "true"
			case d.noOptVal != "":
				val = d.noOptVal
			case i+1 < len(args):
				i++
				val = args[i]
			default:
				return usagef("flag --%s needs a value; see 'msbctl %s --help'", name, fs.cmd)
			}
			if err := fs.set(d, "--"+name, val); err != nil {
				return err
			}
		default:
			// Short flags: -o yaml, -o=yaml, -oyaml, -it.
			rest := a[1:]
			for rest != "" {
				name := rest[:1]
				rest = rest[1:]
				d := fs.short[name]
				if d == nil {
					return fs.unknown("-" + name)
				}
				if d.isBool {
					val := "true"
					if strings.HasPrefix(rest, "=") {
						val, rest = rest[1:], ""
					}
					if err := fs.set(d, "-"+name, val); err != nil {
						return err
					}
					continue
				}
				val := strings.TrimPrefix(rest, "=")
				rest = ""
				if val == "" {
					if i+1 >= len(args) {
						return usagef("flag -%s needs a value; see 'msbctl %s --help'", name, fs.cmd)
					}
					i++
					val = args[i]
				}
				if err := fs.set(d, "-"+name, val); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// changed reports whether the flag named long was given.
func (fs *flagSet) changed(long string) bool { return fs.seen[long] }

// args returns the positional arguments.
func (fs *flagSet) args() []string { return fs.pos }

// printDefaults writes the flag table of a help page.
func (fs *flagSet) printDefaults(w io.Writer) {
	defs := append([]*flagDef(nil), fs.defs...)
	sort.SliceStable(defs, func(i, j int) bool { return defs[i].long < defs[j].long })
	for _, d := range defs {
		name := "    "
		if d.short != "" {
			name = "-" + d.short + ", "
		}
		name += "--" + d.long
		if !d.isBool {
			if d.noOptVal != "" {
				name += "[=" + d.argName + "]"
			} else {
				name += " " + d.argName
			}
		}
		usage := d.usage
		switch {
		case d.isBool && d.defText == "true", d.argName == "duration" && d.defText != "":
			usage += fmt.Sprintf(" (default %s)", d.defText)
		case !d.isBool && d.defText != "":
			usage += fmt.Sprintf(" (default %q)", d.defText)
		}
		fmt.Fprintf(w, "  %-32s %s\n", name, usage)
	}
}
