package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A small valid set: a Task with a required param and workspace, a Pipeline running it
// (and a remote task), a run, and a TriggerTemplate that renders the same run.
const task = `
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: build, namespace: ci}
spec:
  params:
    - {name: tag, type: string}
  workspaces:
    - name: source
  results:
    - name: digest
  steps:
    - name: build
      image: alpine:3.20
      script: echo $(params.tag) > $(results.digest.path)
`

const pipeline = `
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: ship, namespace: ci}
spec:
  params:
    - {name: tag, type: string}
    - {name: overlay, type: string, default: direct}
  workspaces:
    - name: source
  tasks:
    - name: fetch
      taskRef:
        resolver: git
        params:
          - {name: url, value: https://example.com/catalog.git}
          - {name: pathInRepo, value: task.yaml}
      workspaces:
        - {name: output, workspace: source}
    - name: build
      runAfter: [fetch]
      taskRef: {name: build}
      params:
        - {name: tag, value: $(params.tag)}
      workspaces:
        - {name: source, workspace: source}
  results:
    - name: digest
      value: $(tasks.build.results.digest)
`

const runSpec = `
  pipelineRef: {name: ship}
  params:
    - {name: tag, value: v1}
  workspaces:
    - name: source
      emptyDir: {}
`

const pipelineRun = `
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {generateName: ship-, namespace: ci}
spec:` + runSpec

const triggerTemplate = `
apiVersion: triggers.tekton.dev/v1beta1
kind: TriggerTemplate
metadata: {name: ship, namespace: ci}
spec:
  params:
    - name: tag
  resourcetemplates:
    - apiVersion: tekton.dev/v1
      kind: PipelineRun
      metadata: {generateName: ship-}
      spec:
        pipelineRef: {name: ship}
        params:
          - {name: tag, value: $(tt.params.tag)}
        workspaces:
          - name: source
            emptyDir: {}
`

const configMap = `
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated, namespace: ci}
data: {a: b}
`

// validate runs the command on the given streams (one file each) and returns the result
// of each document by kind/name, its exit status and what it wrote to stderr.
func validate(t *testing.T, extraArgs []string, streams ...string) (map[string]Result, int, string) {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{}, extraArgs...)
	for i, s := range streams {
		p := filepath.Join(dir, "in"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(""), &stdout, &stderr)
	results := map[string]Result{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		results[r.Kind+"/"+r.Name] = r
	}
	return results, code, stderr.String()
}

func stream(docs ...string) string { return strings.Join(docs, "\n---\n") }

// wantError checks that the document has result "error" and an error containing each of want.
func wantError(t *testing.T, results map[string]Result, key string, want ...string) {
	t.Helper()
	r, ok := results[key]
	if !ok {
		t.Fatalf("no result for %s in %v", key, results)
	}
	if r.Result != "error" {
		t.Fatalf("%s: result %q, want error", key, r.Result)
	}
	joined := strings.Join(r.Errors, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("%s: errors %q lack %q", key, r.Errors, w)
		}
	}
}

func wantOK(t *testing.T, results map[string]Result, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if r := results[k]; r.Result != "ok" {
			t.Errorf("%s: result %q, errors %q; want ok", k, r.Result, r.Errors)
		}
	}
}

func TestValidSetPasses(t *testing.T) {
	results, code, stderr := validate(t, nil, stream(configMap, task, pipeline), pipelineRun, triggerTemplate)
	if code != 0 {
		t.Fatalf("exit %d, results %v, stderr %s", code, results, stderr)
	}
	wantOK(t, results, "Task/build", "Pipeline/ship", "PipelineRun/ship-", "TriggerTemplate/ship")
	if r := results["ConfigMap/unrelated"]; r.Result != "skip" || r.Errors == nil {
		t.Errorf("ConfigMap: %+v, want skip with an empty errors list", r)
	}
	// The remote task can't be resolved offline: noted as skipped, not an error.
	if !strings.Contains(stderr, `skip: pipeline task "fetch": taskRef resolver "git"`) {
		t.Errorf("stderr lacks the remote-ref skip note:\n%s", stderr)
	}
}

func TestUnknownFieldInStep(t *testing.T) {
	broken := strings.Replace(task, "      script:", "      scirpt:", 1)
	results, code, _ := validate(t, nil, broken)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantError(t, results, "Task/build", `unknown field "scirpt"`)
}

func TestRunAfterNamesMissingTask(t *testing.T) {
	broken := strings.Replace(pipeline, "runAfter: [fetch]", "runAfter: [fetch-source]", 1)
	results, code, _ := validate(t, nil, stream(task, broken))
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantError(t, results, "Pipeline/ship", "fetch-source", "spec.tasks")
}

func TestRunMissingRequiredParam(t *testing.T) {
	broken := strings.Replace(pipelineRun, "    - {name: tag, value: v1}\n", "    - {name: overlay, value: direct}\n", 1)
	results, code, _ := validate(t, nil, stream(task, pipeline), broken)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantError(t, results, "PipelineRun/ship-", "ParameterMissing: pipelineRun missing parameters: [tag]")
	wantOK(t, results, "Pipeline/ship")
}

func TestRunMissingWorkspace(t *testing.T) {
	broken := strings.Replace(pipelineRun, "  workspaces:\n    - name: source\n      emptyDir: {}\n", "", 1)
	results, _, _ := validate(t, nil, stream(task, pipeline, broken))
	wantError(t, results, "PipelineRun/ship-", `InvalidWorkspaceBindings: pipeline requires workspace with name "source" be provided by pipelinerun`)
}

func TestTemplateRendersInvalidRun(t *testing.T) {
	// Refused at admission once rendered: a run may not name both a Pipeline and a spec.
	invalid := strings.Replace(triggerTemplate, "pipelineRef: {name: ship}", "pipelineRef: {name: ship}\n        pipelineSpec: {tasks: []}", 1)
	results, code, _ := validate(t, nil, stream(task, pipeline, invalid))
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantError(t, results, "TriggerTemplate/ship", "resourcetemplates[0] PipelineRun ship-: refused at admission", "expected exactly one, got both")

	// Admitted, but the rendered run lacks a param its Pipeline requires.
	missing := strings.Replace(triggerTemplate, "          - {name: tag, value: $(tt.params.tag)}\n", "          - {name: overlay, value: $(tt.params.tag)}\n", 1)
	results, _, _ = validate(t, nil, stream(task, pipeline, missing))
	wantError(t, results, "TriggerTemplate/ship", "resourcetemplates[0] PipelineRun ship-: ParameterMissing")
}

func TestPipelineTaskAgainstTask(t *testing.T) {
	// The Task's required param and workspace are not given, and a result it lacks is read.
	broken := strings.NewReplacer(
		"      params:\n        - {name: tag, value: $(params.tag)}\n      workspaces:\n        - {name: source, workspace: source}\n", "",
		"$(tasks.build.results.digest)", "$(tasks.build.results.sha)",
	).Replace(pipeline)
	results, _, _ := validate(t, nil, stream(task, broken))
	wantError(t, results, "Pipeline/ship",
		"invalid input params for task build: missing values for these params which have no default values: [tag]",
		`"sha" is not a named result returned by pipeline task "build"`,
		`pipeline task "build": declared workspace "source" is required but has not been bound`)
}

func TestConfigOverridesDefaults(t *testing.T) {
	matrixPipeline := strings.Replace(pipeline, "      taskRef: {name: build}\n      params:\n        - {name: tag, value: $(params.tag)}\n",
		"      taskRef: {name: build}\n      matrix:\n        params:\n          - {name: tag, value: [a, b]}\n", 1)
	results, code, _ := validate(t, nil, stream(task, matrixPipeline))
	if code != 0 {
		t.Fatalf("matrix under the default flags: exit %d, %v", code, results)
	}
	flags := `
apiVersion: v1
kind: ConfigMap
metadata: {name: feature-flags, namespace: tekton-pipelines}
data: {enable-api-fields: stable}
`
	dir := t.TempDir()
	cfg := filepath.Join(dir, "flags.yaml")
	if err := os.WriteFile(cfg, []byte(flags), 0o644); err != nil {
		t.Fatal(err)
	}
	results, _, _ = validate(t, []string{"--config", cfg}, stream(task, matrixPipeline))
	wantError(t, results, "Pipeline/ship", "matrix requires \"enable-api-fields\" feature gate to be \"alpha\" or \"beta\"")

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(flags, "stable", "nonsense", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, code, _ := validate(t, []string{"--config", bad}, task); code != 2 {
		t.Errorf("invalid feature-flags: exit %d, want 2", code)
	}
}

func TestUnreadableInput(t *testing.T) {
	if _, code, _ := validate(t, nil, "kind: [unclosed\n"); code != 2 {
		t.Errorf("bad YAML: exit %d, want 2", code)
	}
	if _, code, _ := validate(t, nil, "just: a map\n"); code != 2 {
		t.Errorf("no kind: exit %d, want 2", code)
	}
	dupe := strings.Replace(task, "metadata: {name: build, namespace: ci}", "metadata: {name: build, namespace: ci}\nmetadata: {name: build}", 1)
	results, code, _ := validate(t, nil, dupe)
	if code != 1 {
		t.Fatalf("duplicate key: exit %d, want 1", code)
	}
	wantError(t, results, "Task/build", `key "metadata" already set in map`)
}
