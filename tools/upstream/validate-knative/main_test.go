package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	eventingconfig "knative.dev/eventing/pkg/apis/config"
	channelconfig "knative.dev/eventing/pkg/apis/messaging/config"
)

// ksvc is a Knative Service that the webhook admits; cases below break one thing each.
const ksvc = `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: cqrs
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "0"
        autoscaling.knative.dev/max-scale: "10"
    spec:
      containerConcurrency: 8
      containers:
        - image: hello:1
          ports:
            - containerPort: 8080
          readinessProbe:
            httpGet:
              path: /readyz
`

const trigger = `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  namespace: cqrs
spec:
  broker: default
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: hello
`

func runWith(t *testing.T, stdin string, args ...string) (int, []result, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	var rs []result
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r result
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("bad output line: %v", err)
		}
		rs = append(rs, r)
	}
	return code, rs, errb.String()
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantError checks one document erred with a message containing each of want.
func wantError(t *testing.T, code int, rs []result, want ...string) {
	t.Helper()
	if code != exitInvalid || len(rs) != 1 || rs[0].Result != "error" {
		t.Fatalf("want one error and exit 1, got exit %d: %+v", code, rs)
	}
	all := strings.Join(rs[0].Errors, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("errors %q lack %q", all, w)
		}
	}
}

func TestValidServiceAndOthers(t *testing.T) {
	stream := ksvc + "---\n" + `apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
`
	code, rs, stderr := runWith(t, stream, "-")
	if code != exitOK || len(rs) != 3 {
		t.Fatalf("exit %d, %+v, %s", code, rs, stderr)
	}
	if rs[0].Result != "ok" || rs[0].Name != "hello" || rs[0].File != "-" || rs[0].Index != 0 {
		t.Errorf("ksvc: %+v", rs[0])
	}
	if rs[1].Result != "skip" {
		t.Errorf("ConfigMap: %+v", rs[1])
	}
	// The broker class comes from config-br-defaults; no namespace means "default".
	if rs[2].Result != "ok" || rs[2].Namespace != "default" || rs[2].Index != 2 {
		t.Errorf("Broker: %+v", rs[2])
	}
}

func TestUnknownFieldRefused(t *testing.T) {
	doc := strings.Replace(ksvc, "        - image: hello:1\n", "        - image: hello:1\n          imagePullPolcy: Always\n", 1)
	code, rs, _ := runWith(t, doc, "-")
	wantError(t, code, rs, `unknown field "imagePullPolcy"`)
}

func TestInvalidAnnotationRefused(t *testing.T) {
	doc := strings.Replace(ksvc, `min-scale: "0"`, `min-scale: "x"`, 1)
	code, rs, _ := runWith(t, doc, "-")
	wantError(t, code, rs, "invalid value: x", "autoscaling.knative.dev/min-scale")
}

func TestProbeFailureThresholdWithoutPeriod(t *testing.T) {
	doc := strings.Replace(ksvc, "              path: /readyz\n", "              path: /readyz\n            failureThreshold: 3\n", 1)
	code, rs, _ := runWith(t, doc, "-")
	wantError(t, code, rs, "failureThreshold is disallowed when periodSeconds is zero")
}

func TestTriggerWithoutSubscriber(t *testing.T) {
	code, rs, _ := runWith(t, trigger, "-")
	if code != exitOK || rs[0].Result != "ok" {
		t.Fatalf("valid trigger: exit %d %+v", code, rs)
	}
	doc := trigger[:strings.Index(trigger, "  subscriber:")]
	code, rs, _ = runWith(t, doc, "-")
	wantError(t, code, rs, "expected at least one, got none: spec.subscriber.ref, spec.subscriber.uri")
}

func TestUnknownKindInHandledGroup(t *testing.T) {
	code, rs, _ := runWith(t, "apiVersion: serving.knative.dev/v1\nkind: Servce\nmetadata: {name: a}\n", "-")
	wantError(t, code, rs, "no Knative webhook serves")
}

func TestUnparsableInput(t *testing.T) {
	if code, _, _ := runWith(t, "a: [\n", "-"); code != exitInput {
		t.Errorf("bad YAML: exit %d, want 2", code)
	}
	if code, _, _ := runWith(t, "", filepath.Join(t.TempDir(), "missing.yaml")); code != exitInput {
		t.Errorf("missing file: exit %d, want 2", code)
	}
}

func TestConfigOverrides(t *testing.T) {
	// config-autoscaler's max-scale-limit bounds the max-scale annotation (and the
	// default max-scale, which then must be set too).
	limit := writeFile(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {max-scale-limit: "5", max-scale: "5"}
`)
	code, rs, _ := runWith(t, ksvc, "--config", limit, "-")
	wantError(t, code, rs, "autoscaling.knative.dev/max-scale")

	bad := writeFile(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {max-scale-limit: "many"}
`)
	if code, _, _ := runWith(t, ksvc, "--config", bad, "-"); code != exitInput {
		t.Errorf("unparsable config: exit %d, want 2", code)
	}
	// config-features exists in both knative-serving and knative-eventing.
	ambiguous := writeFile(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features}\n")
	if code, _, stderr := runWith(t, ksvc, "--config", ambiguous, "-"); code != exitInput || !strings.Contains(stderr, "no namespace") {
		t.Errorf("ambiguous config: exit %d, %s", code, stderr)
	}
}

func TestDomain(t *testing.T) {
	both := writeFile(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: config-domain, namespace: knative-serving}
data:
  1.2.3.4.sslip.io: ""
  example.com: ""
`)
	domain := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(append([]string{"domain"}, args...), strings.NewReader(""), &out, &errb); code != exitOK {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	// Two keys without selectors: LookupDomainForLabels keeps the smaller string.
	if got := domain("--config", both, "--namespace", "cqrs", "--name", "cqrs-dispatcher"); got != "cqrs-dispatcher.cqrs.1.2.3.4.sslip.io" {
		t.Errorf("both keys: %s", got)
	}
	// No config-domain key at all: svc.cluster.local, so cluster-local.
	if got := domain("--namespace", "cqrs", "--name", "a"); !strings.HasPrefix(got, "a.cqrs.svc.") {
		t.Errorf("no domain: %s", got)
	}
	// A selector is more specific than none.
	sel := writeFile(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: config-domain, namespace: knative-serving}
data:
  1.2.3.4.sslip.io: ""
  example.com: |
    selector:
      app: shop
`)
	if got := domain("--config", sel, "--namespace", "cqrs", "--name", "a", "--label", "app=shop"); got != "a.cqrs.example.com" {
		t.Errorf("selector: %s", got)
	}
}

// The built-in eventing defaults must be what eventing ships in its release ConfigMaps.
func TestEventingDefaultsMatchUpstream(t *testing.T) {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "knative.dev/eventing").Output()
	if err != nil {
		t.Skipf("cannot locate knative.dev/eventing: %v", err)
	}
	shipped := func(file string) *corev1.ConfigMap {
		b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "config/core/configmaps", file))
		if err != nil {
			t.Fatal(err)
		}
		cm := &corev1.ConfigMap{}
		if err := yaml.Unmarshal(b, cm); err != nil {
			t.Fatal(err)
		}
		return cm
	}
	ours := knownConfigMaps()[eventingNS]

	up, err := eventingconfig.NewDefaultsConfigFromConfigMap(shipped("default-broker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := eventingconfig.NewDefaultsConfigFromMap(ours[eventingconfig.DefaultsConfigName])
	if err != nil || !reflect.DeepEqual(up, got) {
		t.Errorf("config-br-defaults differs from upstream: %v", err)
	}

	upCh, err := channelconfig.NewChannelDefaultsConfigFromConfigMap(shipped("default-channel.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gotCh, err := channelconfig.NewChannelDefaultsConfigFromMap(ours[channelconfig.ChannelDefaultsConfigName])
	if err != nil || !reflect.DeepEqual(upCh.ClusterDefault, gotCh.ClusterDefault) {
		t.Errorf("default-ch-webhook cluster default differs from upstream: %v", err)
	}
}
