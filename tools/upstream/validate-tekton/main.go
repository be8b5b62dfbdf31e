// Command validate-tekton runs, offline, what a cluster with Tekton Pipelines and Triggers
// runs on every document we apply: the admission webhooks (strict decode, SetDefaults,
// Validate as on create, with the cluster's config on the context), plus what only shows
// later on a cluster: the PipelineRun reconciler's checks against the referenced Pipeline
// and Tasks, and the resources a TriggerTemplate renders.
//
//	validate-tekton [--config FILE]... FILE...
//
// FILE is a multi-document YAML stream ("-" is stdin); --config FILE is a stream of the
// ConfigMaps (feature-flags, config-defaults, feature-flags-triggers, ...) that override the
// defaults. One JSON object per document goes to stdout; notes on what was skipped (remote
// references, references to objects not in the input) and webhook warnings go to stderr.
// Exit status: 0 no document has errors, 1 some document has, 2 an input can't be read or
// parsed.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Result is one line of output; other code reads these fields, so keep them as they are.
type Result struct {
	File       string   `json:"file"`
	Index      int      `json:"index"`
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Name       string   `json:"name"`
	Result     string   `json:"result"`
	Errors     []string `json:"errors"`
}

// document is one parsed YAML document and what the checks found.
type document struct {
	Result
	gvk  schema.GroupVersionKind
	raw  []byte // the document as JSON, what kubectl sends
	dupe error  // duplicate keys: the API server's strict field validation refuses them

	obj      any // defaulted object, nil when admission failed to decode it
	admitted bool
	errs     orderedSet
	notes    []string
}

func (d *document) label() string {
	return fmt.Sprintf("%s#%d %s %s", d.File, d.Index, d.Kind, d.Name)
}

// errInput is an input that can't be read or parsed (exit status 2).
type errInput struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var configFiles, files []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-h" || a == "--help":
			fmt.Fprintln(stdout, "usage: validate-tekton [--config FILE]... FILE...  (FILE - is stdin)")
			return 0
		case a == "--config":
			if i+1 == len(args) {
				fmt.Fprintln(stderr, "validate-tekton: --config needs a file")
				return 2
			}
			i++
			configFiles = append(configFiles, args[i])
		case strings.HasPrefix(a, "--config="):
			configFiles = append(configFiles, strings.TrimPrefix(a, "--config="))
		case a == "--":
			files = append(files, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			fmt.Fprintf(stderr, "validate-tekton: unknown flag %s\n", a)
			return 2
		default:
			files = append(files, a)
		}
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "usage: validate-tekton [--config FILE]... FILE...  (FILE - is stdin)")
		return 2
	}

	stdinUsed := false
	open := func(name string) ([]byte, error) {
		if name == "-" {
			if stdinUsed {
				return nil, errors.New("stdin given twice")
			}
			stdinUsed = true
			return io.ReadAll(stdin)
		}
		return os.ReadFile(name)
	}

	var configDocs []*document
	for _, f := range configFiles {
		data, err := open(f)
		if err != nil {
			fmt.Fprintf(stderr, "validate-tekton: %v\n", err)
			return 2
		}
		ds, err := parseStream(f, data)
		if err != nil {
			fmt.Fprintf(stderr, "validate-tekton: %s: %v\n", f, err)
			return 2
		}
		configDocs = append(configDocs, ds...)
	}
	cluster, notes, err := newCluster(configDocs)
	for _, n := range notes {
		fmt.Fprintf(stderr, "validate-tekton: note: %s\n", n)
	}
	if err != nil {
		fmt.Fprintf(stderr, "validate-tekton: %v\n", err)
		return 2
	}

	var docs []*document
	for _, f := range files {
		data, err := open(f)
		if err != nil {
			fmt.Fprintf(stderr, "validate-tekton: %v\n", err)
			return 2
		}
		ds, err := parseStream(f, data)
		if err != nil {
			fmt.Fprintf(stderr, "validate-tekton: %s: %v\n", f, err)
			return 2
		}
		docs = append(docs, ds...)
	}

	for _, d := range docs {
		cluster.admitDocument(d)
	}
	cluster.crossCheck(docs)

	status := 0
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for _, d := range docs {
		for _, n := range d.notes {
			fmt.Fprintf(stderr, "validate-tekton: %s: %s\n", d.label(), n)
		}
		d.Errors = d.errs.list()
		switch {
		case !isTekton(d.gvk.Group):
			d.Result.Result = "skip"
		case len(d.Errors) > 0:
			d.Result.Result = "error"
			status = 1
		default:
			d.Result.Result = "ok"
		}
		if err := enc.Encode(d.Result); err != nil {
			fmt.Fprintf(stderr, "validate-tekton: %v\n", err)
			return 2
		}
	}
	return status
}

func isTekton(group string) bool {
	return group == "tekton.dev" || group == "triggers.tekton.dev"
}

// parseStream splits a YAML stream the way kubectl does; empty documents are dropped and
// do not count in the index.
func parseStream(file string, data []byte) ([]*document, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs []*document
	for {
		chunk, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		d, err := parseDocument(chunk)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs), err)
		}
		if d == nil {
			continue
		}
		d.File, d.Index = file, len(docs)
		docs = append(docs, d)
	}
}

// parseDocument turns one YAML document into JSON and reads its type and name.
func parseDocument(chunk []byte) (*document, error) {
	d := &document{}
	raw, err := yaml.YAMLToJSONStrict(chunk)
	if err != nil {
		// Duplicate keys are the usual cause: the document is still readable, but the API
		// server's strict field validation (kubectl's default) would refuse it.
		lax, laxErr := yaml.YAMLToJSON(chunk)
		if laxErr != nil {
			return nil, laxErr
		}
		raw, d.dupe = lax, err
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name         string `json:"name"`
			GenerateName string `json:"generateName"`
			Namespace    string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if head.APIVersion == "" || head.Kind == "" {
		return nil, errors.New("not a Kubernetes object: apiVersion or kind is missing")
	}
	gv, err := schema.ParseGroupVersion(head.APIVersion)
	if err != nil {
		return nil, err
	}
	d.gvk = gv.WithKind(head.Kind)
	d.raw = raw
	d.APIVersion, d.Kind, d.Namespace = head.APIVersion, head.Kind, head.Metadata.Namespace
	// A run created with generateName has no name yet; its prefix is what identifies it.
	d.Name = head.Metadata.Name
	if d.Name == "" {
		d.Name = head.Metadata.GenerateName
	}
	return d, nil
}

// orderedSet keeps the first occurrence of each message: a matrix fans one mistake out
// into several TaskRuns, and it should be reported once.
type orderedSet struct {
	seen  map[string]bool
	items []string
}

func (s *orderedSet) add(msgs ...string) {
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	for _, m := range msgs {
		if !s.seen[m] {
			s.seen[m] = true
			s.items = append(s.items, m)
		}
	}
}

func (s *orderedSet) list() []string {
	if s.items == nil {
		return []string{}
	}
	return s.items
}
