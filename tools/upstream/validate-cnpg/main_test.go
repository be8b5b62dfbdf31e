package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validate runs the command on one YAML stream given on stdin and returns its results.
func validate(t *testing.T, stream string) ([]Result, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run([]string{"-"}, strings.NewReader(stream), &stdout, &stderr)
	var out []Result
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var r Result
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("stdout is not JSON lines: %v\n%s", err, stdout.String())
		}
		out = append(out, r)
	}
	if code == 2 && stderr.Len() == 0 {
		t.Errorf("exit 2 without a message on stderr")
	}
	return out, code
}

// wantError checks that the single document fails with a message containing each of want.
func wantError(t *testing.T, stream string, want ...string) {
	t.Helper()
	res, code := validate(t, stream)
	if code != 1 || len(res) != 1 || res[0].Result != "error" {
		t.Fatalf("want one error result and exit 1, got exit %d: %+v", code, res)
	}
	all := strings.Join(res[0].Errors, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no error contains %q; errors:\n%s", w, all)
		}
	}
}

// The shop's Cluster, as in knative/postgres/cnpg.
const cluster = `apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: cqrs-orders
  namespace: cqrs
spec:
  instances: 2
  bootstrap:
    initdb:
      database: orders
      owner: orders
  inheritedMetadata:
    annotations:
      sidecar.istio.io/inject: "false"
  resources:
    requests:
      cpu: 100m
      memory: 256Mi
    limits:
      memory: 512Mi
  storage:
    size: 5Gi
`

func TestValidDocumentsPass(t *testing.T) {
	res, code := validate(t, cluster+`---
apiVersion: postgresql.cnpg.io/v1
kind: ScheduledBackup
metadata:
  name: nightly
  namespace: cqrs
spec:
  schedule: "0 0 0 * * *"
  cluster:
    name: cqrs-orders
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
`)
	if code != 0 || len(res) != 3 {
		t.Fatalf("exit %d, %d results: %+v", code, len(res), res)
	}
	for i, want := range []string{"ok", "ok", "skip"} {
		if res[i].Result != want || res[i].Index != i || res[i].File != "-" {
			t.Errorf("result %d: %+v, want %s", i, res[i], want)
		}
	}
	if res[0].Kind != "Cluster" || res[0].Name != "cqrs-orders" || res[0].Namespace != "cqrs" ||
		res[0].APIVersion != "postgresql.cnpg.io/v1" {
		t.Errorf("identity not reported: %+v", res[0])
	}
}

func TestClusterUnknownField(t *testing.T) {
	wantError(t, strings.Replace(cluster, "  instances: 2", "  instance: 2", 1),
		`decode: error unmarshaling JSON: while decoding JSON: json: unknown field "instance"`,
		`apiserver: unknown field "spec.instance"`)
}

func TestClusterSchemaAndCELRules(t *testing.T) {
	// OpenAPI minimum.
	wantError(t, strings.Replace(cluster, "instances: 2", "instances: 0", 1),
		"apiserver: spec.instances: Invalid value: 0: spec.instances in body should be greater than or equal to 1")
	// CEL rule of the CRD (x-kubernetes-validations).
	wantError(t, strings.Replace(cluster, "  instances: 2", `  instances: 2
  imageName: ghcr.io/cloudnative-pg/postgresql:18.4
  imageCatalogRef:
    apiGroup: postgresql.cnpg.io
    kind: ImageCatalog
    name: pg
    major: 18`, 1), "imageName and imageCatalogRef are mutually exclusive")
}

func TestClusterPublicChecks(t *testing.T) {
	// The operator cannot tell the PostgreSQL major version from a "latest" tag.
	wantError(t, strings.Replace(cluster, "  instances: 2", "  instances: 2\n  imageName: postgres:latest", 1),
		`cnpg: cannot parse image name "postgres:latest"`)
	// pg_hba may only name pod selectors that spec.podSelectorRefs defines.
	wantError(t, strings.Replace(cluster, "  instances: 2", `  instances: 2
  postgresql:
    pg_hba:
    - host all all ${podselector:app} scram-sha-256`, 1), "cnpg: spec.postgresql.pg_hba[0]:")
}

func TestUnknownKindAndVersion(t *testing.T) {
	wantError(t, strings.Replace(cluster, "kind: Cluster", "kind: Clusters", 1), "decode: no kind \"Clusters\"")
	wantError(t, strings.Replace(cluster, "postgresql.cnpg.io/v1", "postgresql.cnpg.io/v2", 1), "decode: no kind \"Cluster\"")
}

func TestFilesAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{good}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), `"result":"ok"`) {
		t.Errorf("good file: exit %d, %s %s", code, stdout.String(), stderr.String())
	}
	if code := run([]string{filepath.Join(dir, "missing.yaml")}, nil, &stdout, &stderr); code != 2 {
		t.Errorf("missing file: exit %d, want 2", code)
	}
	if _, code := validate(t, "a: [unclosed\n"); code != 2 {
		t.Errorf("bad YAML: exit %d, want 2", code)
	}
}
