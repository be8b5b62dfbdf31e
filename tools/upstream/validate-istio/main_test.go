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

const policyHead = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p
  namespace: cqrs
spec:
  selector:
    matchLabels:
      app: a
`

func TestValidDocumentsPass(t *testing.T) {
	res, code := validate(t, policyHead+`  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: cqrs
spec:
  mtls:
    mode: STRICT
---
# a comment-only document is not reported
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
	if res[0].Kind != "AuthorizationPolicy" || res[0].Namespace != "cqrs" || res[0].Name != "p" ||
		res[0].APIVersion != "security.istio.io/v1" {
		t.Errorf("identity not reported: %+v", res[0])
	}
}

func TestAuthorizationPolicyUnknownField(t *testing.T) {
	// "principal" for "principals": the apiserver prunes it (so kubectl apply refuses it) and the
	// proto message has no such field.
	wantError(t, policyHead+`  rules:
  - from:
    - source:
        principal: ["cluster.local/ns/a/sa/b"]
`, `apiserver: unknown field "spec.rules[0].from[0].source.principal"`, `decode: unknown field "principal"`)
}

func TestAuthorizationPolicyEmptyPrincipal(t *testing.T) {
	wantError(t, policyHead+`  rules:
  - from:
    - source:
        principals: [""]
`, "webhook: invalid policy p.cqrs: empty value not allowed, found in Principals")
}

func TestAuthorizationPolicyPrincipalWithServiceAccount(t *testing.T) {
	// Caught twice: by the CRD's CEL rule and by the webhook.
	wantError(t, policyHead+`  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/a/sa/b"]
        serviceAccounts: ["a/b"]
`, "apiserver: spec.rules[0].from[0].source: Invalid value: Cannot set serviceAccounts with namespaces or principals",
		"webhook: invalid policy p.cqrs: cannot set serviceAccounts with namespaces or principals, found at rule 0")
}

func TestAuthorizationPolicyEmptySource(t *testing.T) {
	wantError(t, policyHead+`  rules:
  - from:
    - source: {}
`, "webhook: invalid policy p.cqrs: `from.source` must not be empty, found at rule 0")
}

func TestDenyPolicyWarning(t *testing.T) {
	res, code := validate(t, policyHead+`  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin"]
`)
	if code != 0 || len(res) != 1 || res[0].Result != "ok" || len(res[0].Warnings) == 0 ||
		!strings.Contains(res[0].Warnings[0], "will deny all traffic to TCP ports") {
		t.Fatalf("want ok with a TCP warning, got exit %d: %+v", code, res)
	}
}

func TestPeerAuthenticationBadMode(t *testing.T) {
	wantError(t, `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: cqrs
spec:
  mtls:
    mode: STRICTEST
`, `apiserver: spec.mtls.mode: Unsupported value: "STRICTEST"`, "webhook: error decoding configuration")
}

func TestUnknownIstioKindAndVersion(t *testing.T) {
	wantError(t, `apiVersion: security.istio.io/v1
kind: PeerAuthentications
metadata:
  name: x
`, "webhook: unrecognized type")
	wantError(t, `apiVersion: security.istio.io/v2
kind: PeerAuthentication
metadata:
  name: x
`, "apiserver: no CRD in Istio's base chart serves")
}

func TestTopLevelUnknownField(t *testing.T) {
	wantError(t, `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: s
specs: {}
`, `webhook: unknown field "specs" on Sidecar resource default/s`, `apiserver: unknown field "specs"`)
}

func TestBadName(t *testing.T) {
	wantError(t, `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: Not_A_Name
spec: {}
`, "apiserver: metadata.name: Invalid value")
}

func TestIstioOperator(t *testing.T) {
	ok := `apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  profile: minimal
  components:
    ingressGateways:
    - name: istio-ingressgateway
      enabled: true
  meshConfig:
    accessLogFile: /dev/stdout
`
	if res, code := validate(t, ok); code != 0 || res[0].Result != "ok" {
		t.Fatalf("valid IstioOperator: exit %d, %+v", code, res)
	}
	wantError(t, strings.Replace(ok, "  meshConfig:", "  meshConfg:", 1), `unknown field "meshConfg"`)
	wantError(t, strings.Replace(ok, "minimal", "no-such-profile", 1), `istioctl install: profile "no-such-profile" not found`)
	wantError(t, strings.Replace(ok, "accessLogFile: /dev/stdout", "accessLogFile: 3", 1), "istioctl validate:")
}

func TestFilesAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{good}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), `"result":"skip"`) {
		t.Errorf("good file: exit %d, %s %s", code, stdout.String(), stderr.String())
	}
	if code := run([]string{filepath.Join(dir, "missing.yaml")}, nil, &stdout, &stderr); code != 2 {
		t.Errorf("missing file: exit %d, want 2", code)
	}
	if _, code := validate(t, "a: [unclosed\n"); code != 2 {
		t.Errorf("bad YAML: exit %d, want 2", code)
	}
	if _, code := validate(t, "- just\n- a list\n"); code != 2 {
		t.Errorf("non-object document: exit %d, want 2", code)
	}
}
