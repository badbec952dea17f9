package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type imageOptions struct {
	globalOptions
	policy string
	output string
}

// flags are those of every image subcommand; runImage refuses a flag given to a
// subcommand it does not belong to.
func (o *imageOptions) flags() *flagSet {
	fs := newFlagSet("image")
	o.register(fs)
	fs.stringVar(&o.policy, "policy", "", "Always", "pull: Always (ask the registry), IfNotPresent (only what msbd lacks) or Never")
	fs.stringVar(&o.output, "output", "o", "table", "ls: output format: table, json, yaml or name")
	return fs
}

func newImageCommand(e *env) *cobra.Command {
	o := &imageOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "image pull REF [--policy Always|IfNotPresent|Never] | image ls [-o table|json|yaml|name] | image rm REF... | image prune"
	cmd.Short = "Pull, list, remove and prune images"
	cmd.Long = `Manage the images msbd holds.

Subcommands:
  pull REF     pull an image into msbd's store, showing progress per layer
  ls           list the images msbd holds and how many sandboxes use each (also: msbctl images)
  rm REF...    forget images; an image a sandbox uses is refused (delete the sandbox first)
  prune        remove the layers and blobs no image uses; never a layer of an image in use

REF is written as in a Sandbox's spec.image: python:3.12-slim, ghcr.io/org/tool@sha256:...
rm also takes a canonical name or a manifest digest (sha256:...).`
	cmd.Example = `  # Pull an image before any sandbox needs it
  msbctl image pull python:3.12-slim

  # List the images as JSON
  msbctl image ls -o json

  # Forget an image
  msbctl image rm python:3.12-slim

  # Free the space of layers no image uses
  msbctl image prune`
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch {
		case len(args) == 0:
			return cobra.FixedCompletions([]cobra.Completion{
				cobra.CompletionWithDesc("pull", "pull an image into msbd's store"),
				cobra.CompletionWithDesc("ls", "list the images msbd holds"),
				cobra.CompletionWithDesc("rm", "forget images"),
				cobra.CompletionWithDesc("prune", "remove the layers and blobs no image uses"),
			}, noFiles)(c, args, toComplete)
		case args[0] == "rm" || args[0] == "remove":
			return imageRefs(c.Context(), &o.globalOptions, args[1:], toComplete), noFiles
		}
		return nil, noFiles
	}
	cmd.RegisterFlagCompletionFunc("policy", fixedValues("Always", "IfNotPresent", "Never"))
	cmd.RegisterFlagCompletionFunc("output", fixedValues(outTable, outJSON, outYAML, outName))
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runImage(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func newImagesCommand(e *env) *cobra.Command {
	o := &imagesOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "images [-o table|json|yaml|name]"
	cmd.Short = "List images (same as image ls)"
	cmd.Long = `List the images msbd holds and how many sandboxes use each: the same as
"msbctl image ls".`
	cmd.Example = `  # List the images
  msbctl images

  # Only their references
  msbctl images -o name`
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	cmd.RegisterFlagCompletionFunc("output", fixedValues(outTable, outJSON, outYAML, outName))
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		if len(args) > 0 {
			return usageFail(e.stderr, "images", "unexpected argument %q", args[0])
		}
		return imageList(ctx, c, o.output, e.stdout, e.stderr)
	})
	return cmd
}

// imageRefs completes the images rm may remove, asking msbd which it holds.
func imageRefs(ctx context.Context, g *globalOptions, skip []string, toComplete string) []cobra.Completion {
	ctx, cancel := completionContext(ctx)
	defer cancel()
	list, err := g.client().Images(ctx)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, i := range list {
		if strings.HasPrefix(i.Ref, toComplete) && !slices.Contains(skip, i.Ref) {
			out = append(out, i.Ref)
		}
	}
	return out
}

type imagesOptions struct {
	globalOptions
	output string
}

func (o *imagesOptions) flags() *flagSet {
	fs := newFlagSet("images")
	o.register(fs)
	fs.stringVar(&o.output, "output", "o", "table", "output format: table, json, yaml or name")
	return fs
}

func runImage(ctx context.Context, c *client.Client, o *imageOptions, pos []string, stdout, stderr io.Writer) int {
	if len(pos) == 0 {
		return usageFail(stderr, "image", "say what to do: pull, ls, rm or prune")
	}
	sub, rest := pos[0], pos[1:]
	// Flags belong to one subcommand each.
	for flag, owner := range map[string]string{"policy": "pull", "output": "ls"} {
		if o.changed(flag) && sub != owner && !(owner == "ls" && sub == "list") {
			return usageFail(stderr, "image", "--%s is a flag of image %s, not of image %s", flag, owner, sub)
		}
	}
	switch sub {
	case "pull":
		if len(rest) != 1 {
			return usageFail(stderr, "image", "image pull takes one image reference")
		}
		switch o.policy {
		case "Always", "IfNotPresent", "Never":
		default:
			return usageFail(stderr, "image", "unknown --policy %q: use Always, IfNotPresent or Never", o.policy)
		}
		return imagePull(ctx, c, rest[0], o.policy, stdout, stderr)
	case "ls", "list":
		if len(rest) > 0 {
			return usageFail(stderr, "image", "unexpected argument %q", rest[0])
		}
		return imageList(ctx, c, o.output, stdout, stderr)
	case "rm", "remove":
		if len(rest) == 0 {
			return usageFail(stderr, "image", "image rm takes the images to remove")
		}
		return imageRemove(ctx, c, rest, stdout, stderr)
	case "prune":
		if len(rest) > 0 {
			return usageFail(stderr, "image", "unexpected argument %q", rest[0])
		}
		blobs, layers, bytes, err := c.PruneImages(ctx)
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "Pruned %d layers, %d blobs, freed %s\n", layers, blobs, humanSize(bytes))
		return exitOK
	}
	return usageFail(stderr, "image", "unknown subcommand %q: use pull, ls, rm or prune", sub)
}

// isTerminal says whether w is a terminal; tests replace it.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func imagePull(ctx context.Context, c *client.Client, ref, policy string, stdout, stderr io.Writer) int {
	var d pullDisplay
	if isTerminal(stderr) {
		d = &barDisplay{w: stderr}
	} else {
		d = &lineDisplay{w: stderr, last: map[string]time.Time{}}
	}
	info, err := c.PullImage(ctx, ref, policy, d.update)
	d.finish()
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "Pulled %s (%s)\n", ref, info.Digest)
	return exitOK
}

func imageList(ctx context.Context, c *client.Client, output string, stdout, stderr io.Writer) int {
	switch output {
	case "", outTable, outJSON, outYAML, outName:
	default:
		return fail(stderr, usagef("unknown output format %q: want one of table, json, yaml, name", output))
	}
	list, err := c.Images(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	if len(list) == 0 && (output == "" || output == outTable || output == outName) {
		fmt.Fprintln(stderr, "No images found.")
		return exitOK
	}
	if err := printImages(stdout, output, list); err != nil {
		return fail(stderr, err)
	}
	return exitOK
}

// printImages writes images in format: a table, {"items": [...]} as JSON or YAML,
// or one reference per line.
func printImages(w io.Writer, format string, list []v1alpha1.ImageInfo) error {
	if list == nil {
		list = []v1alpha1.ImageInfo{}
	}
	doc := struct {
		Items []v1alpha1.ImageInfo `json:"items" yaml:"items"`
	}{list}
	switch format {
	case outJSON:
		b, err := json.MarshalIndent(doc, "", "    ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case outYAML:
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return err
		}
		return enc.Close()
	case outName:
		for _, i := range list {
			fmt.Fprintln(w, i.Ref)
		}
		return nil
	}
	rows := [][]string{{"REF", "DIGEST", "SIZE", "IN-USE", "AGE"}}
	for _, i := range list {
		pulled := i.Pulled
		rows = append(rows, []string{i.Ref, shortLayer(i.Digest), humanSize(i.Size), strconv.Itoa(i.InUse), ageOf(&pulled)})
	}
	return writeRows(w, rows)
}

// writeRows writes an aligned table as tablePrinter does.
func writeRows(w io.Writer, rows [][]string) error {
	var widths []int
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			b.WriteString(cell)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)+columnGap))
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func imageRemove(ctx context.Context, c *client.Client, refs []string, stdout, stderr io.Writer) int {
	code := exitOK
	for _, ref := range refs {
		if err := c.RemoveImage(ctx, ref); err != nil {
			fail(stderr, err)
			code = exitFail
			continue
		}
		fmt.Fprintf(stdout, "Removed %s\n", ref)
	}
	return code
}
