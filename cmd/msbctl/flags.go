package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// This file binds msbctl's flags to cobra and pflag. pflag does the parsing
// (flags and positional arguments mix as in kubectl: msbctl get sb x -o yaml
// is msbctl -o yaml get sb x; -o yaml, -o=yaml, -oyaml; -it clusters; "--"
// ends the flags). What stays here is what pflag does not say the way msbctl
// always has: the wording of usage errors, a bool that says "want true or
// false", durations that also take bare seconds, and exec's rule that flags
// end at the remote command.

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// flagSet is one command's flags, held by the cobra command that parses
// them. Options structs register into it (see getOptions.flags), so the same
// definitions serve the CLI, its help page, completion and the tests.
type flagSet struct {
	name string // the command's name, for error messages
	cmd  *cobra.Command
	help bool
	// endsAtCommand (exec) ends flag parsing at the second positional
	// argument: in exec NAME CMD -la, -la belongs to CMD.
	endsAtCommand bool
	// raw is the command line last parsed: pflag's errors do not say whether
	// a flag was given by its short or its long name, and msbctl's do.
	raw []string
	pos []string
}

func newFlagSet(name string) *flagSet {
	fs := &flagSet{name: name, cmd: &cobra.Command{
		Use:  name,
		Args: cobra.ArbitraryArgs, // commands check their own arguments, with their own messages
		// msbctl prints its errors itself, in its own words (see execute).
		SilenceErrors: true,
		SilenceUsage:  true,
	}}
	fs.boolVar(&fs.help, "help", "h", false, "show help for this command")
	// Tell cobra this is its help flag: no completion after it.
	fs.flags().SetAnnotation("help", cobra.FlagSetByCobraAnnotation, []string{"true"})
	return fs
}

func (fs *flagSet) flags() *pflag.FlagSet { return fs.cmd.Flags() }

// boolValue is a bool flag whose bad values are reported as msbctl always
// did. Given bare it means true through its NoOptDefVal (see boolVar); it
// does not claim IsBoolFlag, which would have pflag's help print every bool
// as --flag[=true|false].
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
func (v boolValue) Type() string   { return "bool" } // cobra reads --help with GetBool

// durationValue is a duration flag that, like kubectl's --timeout, also
// takes a bare number of seconds and refuses negative durations.
type durationValue struct{ p *time.Duration }

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
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
func (v durationValue) Type() string   { return "duration" }

func (fs *flagSet) stringVar(p *string, long, short, def, usage string) {
	fs.flags().StringVarP(p, long, short, def, usage)
}

func (fs *flagSet) boolVar(p *bool, long, short string, def bool, usage string) {
	*p = def
	f := fs.flags().VarPF(boolValue{p}, long, short, usage)
	f.NoOptDefVal = "true"
}

func (fs *flagSet) durationVar(p *time.Duration, long, short string, def time.Duration, usage string) {
	*p = def
	fs.flags().VarP(durationValue{p}, long, short, usage)
}

// sliceValue is a repeatable flag. Unlike pflag's StringSlice it never
// splits a value at commas (-e A=1,2 is one variable); unlike StringArray
// its help reads "strings", as kubectl's -f does.
type sliceValue struct{ p *[]string }

func (v sliceValue) Set(s string) error       { *v.p = append(*v.p, s); return nil }
func (v sliceValue) String() string           { return strings.Join(*v.p, ",") }
func (v sliceValue) Type() string             { return "strings" }
func (v sliceValue) GetSlice() []string       { return *v.p }
func (v sliceValue) Append(s string) error    { return v.Set(s) }
func (v sliceValue) Replace(s []string) error { *v.p = s; return nil }

func (fs *flagSet) sliceVar(p *[]string, long, short, usage string) {
	fs.flags().VarP(sliceValue{p}, long, short, usage)
}

// optStringVar is a string flag whose value is optional: given bare it takes
// noOpt, and it never takes the next argument as its value.
func (fs *flagSet) optStringVar(p *string, long, def, noOpt, usage string) {
	fs.flags().StringVar(p, long, def, usage)
	fs.flags().Lookup(long).NoOptDefVal = noOpt
}

// parse parses args as cobra does before running the command, then applies
// finish; tests use it to check the command line alone.
func (fs *flagSet) parse(args []string) error {
	fs.raw = args
	if err := fs.cmd.ParseFlags(args); err != nil {
		return fs.usageErr(err)
	}
	return fs.finish(fs.flags().Args())
}

// finish takes the positional arguments cobra parsed out. For exec, cobra
// (told not to intersperse) stopped at the sandbox name; the flags between
// it and the command are parsed here.
func (fs *flagSet) finish(args []string) error {
	fs.pos = args
	if !fs.endsAtCommand || len(args) == 0 || fs.flags().ArgsLenAtDash() >= 0 {
		return nil
	}
	if err := fs.flags().Parse(args[1:]); err != nil {
		return fs.usageErr(err)
	}
	fs.pos = append([]string{args[0]}, fs.flags().Args()...)
	return nil
}

// changed reports whether the flag named long was given.
func (fs *flagSet) changed(long string) bool { return fs.flags().Changed(long) }

// args returns the positional arguments.
func (fs *flagSet) args() []string { return fs.pos }

// usageErr words one of pflag's parse errors as msbctl's usage errors.
func (fs *flagSet) usageErr(err error) error { return flagError(fs.name, fs.raw, err) }

// flagError words one of pflag's parse errors, met parsing raw for command
// cmd ("" for msbctl itself), as msbctl's usage errors always read.
func flagError(cmd string, raw []string, err error) error {
	var (
		notExist *pflag.NotExistError
		noValue  *pflag.ValueRequiredError
		invalid  *pflag.InvalidValueError
		syntax   *pflag.InvalidSyntaxError
	)
	see := "see 'msbctl --help'"
	if cmd != "" {
		see = fmt.Sprintf("see 'msbctl %s --help'", cmd)
	}
	switch {
	case errors.As(err, &notExist):
		name := "--" + notExist.GetSpecifiedName()
		if notExist.GetSpecifiedShortnames() != "" {
			name = "-" + notExist.GetSpecifiedName()
		}
		return unknownFlag(cmd, name)
	case errors.As(err, &noValue):
		name := "--" + noValue.GetSpecifiedName()
		if noValue.GetSpecifiedShortnames() != "" {
			name = "-" + noValue.GetSpecifiedName()
		}
		return usagef("flag %s needs a value; %s", name, see)
	case errors.As(err, &invalid):
		return usagef("invalid value for %s: %v; %s", spelling(raw, invalid.GetFlag()), errors.Unwrap(invalid), see)
	case errors.As(err, &syntax):
		// ---x or --=x: named as the flag before any "=".
		name, _, _ := strings.Cut(syntax.GetSpecifiedFlag(), "=")
		return unknownFlag(cmd, name)
	}
	return usagef("%v; %s", err, see)
}

func unknownFlag(cmd, flag string) error {
	if cmd == "" {
		return usagef("unknown flag %s; see 'msbctl --help'", flag)
	}
	return usagef("unknown flag %s for %q; see 'msbctl %s --help'", flag, cmd, cmd)
}

// spelling is how f was written in raw: -w or --watch.
func spelling(raw []string, f *pflag.Flag) string {
	for _, a := range raw {
		if a == "--" {
			break
		}
		if a == "--"+f.Name || strings.HasPrefix(a, "--"+f.Name+"=") {
			return "--" + f.Name
		}
	}
	if f.Shorthand != "" {
		return "-" + f.Shorthand
	}
	return "--" + f.Name
}
