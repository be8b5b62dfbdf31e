// validate-istio runs Istio's own validation on the Istio documents of YAML streams.
//
//	validate-istio FILE...   (FILE "-" reads stdin)
//
// Each document whose API group is Istio's goes through what a cluster does when it is applied:
//   - apiserver: metadata rules, then the CRD's OpenAPI schema, list types, unknown fields and CEL
//     rules (x-kubernetes-validations), using the CRDs compiled into istio.io/istio/manifests;
//   - istiod's validating webhook: conversion to the istio.io/api proto message and the kind's
//     validation function (pkg/config/validation), with the webhook's top-level field check;
//   - strict decode: the spec must decode into the proto message with no unknown field, as
//     `istioctl validate` requires.
//
// IstioOperator (install.istio.io/v1alpha1) has no CRD in the cluster: istioctl reads it. It is
// validated as `istioctl validate` does (the document alone) and as `istioctl install` does
// (merged onto its profile from the compiled-in profiles).
//
// One JSON object per non-empty document goes to stdout; index counts non-empty documents from 0.
// Exit status: 0 no errors, 1 some document has errors, 2 some input could not be read or parsed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-multierror"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	crvalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"istio.io/istio/manifests"
	operatorapis "istio.io/istio/operator/pkg/apis"
	operatorvalidation "istio.io/istio/operator/pkg/apis/validation"
	"istio.io/istio/operator/pkg/render"
	"istio.io/istio/operator/pkg/values"
	pilotcrd "istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/resource"
	"istio.io/istio/pkg/config/validation"
	istiolog "istio.io/istio/pkg/log"
)

// The CRDs istio.io/istio ships (same content as istio.io/api's kubernetes/customresourcedefinitions.gen.yaml).
const crdPath = "charts/base/files/crd-all.gen.yaml"

var istioGroups = map[string]bool{
	"networking.istio.io": true,
	"security.istio.io":   true,
	"telemetry.istio.io":  true,
	"install.istio.io":    true,
	"extensions.istio.io": true,
}

// What the webhook accepts at the top level of an object (pkg/webhooks/validation/server).
var topLevelFields = map[string]bool{"apiVersion": true, "kind": true, "metadata": true, "spec": true, "status": true}

// Result is the JSON line written for each document.
type Result struct {
	File       string   `json:"file"`
	Index      int      `json:"index"`
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Name       string   `json:"name"`
	Result     string   `json:"result"`
	Errors     []string `json:"errors"`
	Warnings   []string `json:"warnings"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: validate-istio FILE...   (FILE - reads stdin)")
		return 2
	}
	quietIstioLog()
	v, err := loadValidator()
	if err != nil {
		fmt.Fprintln(stderr, "validate-istio:", err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	status := 0
	for _, file := range args {
		data, err := readInput(file, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "validate-istio: %s: %v\n", file, err)
			status = 2
			continue
		}
		docs, err := splitDocuments(data)
		if err != nil {
			fmt.Fprintf(stderr, "validate-istio: %s: %v\n", file, err)
			status = 2
			continue
		}
		for i, doc := range docs {
			res, err := v.validate(doc)
			if err != nil {
				fmt.Fprintf(stderr, "validate-istio: %s: document %d: %v\n", file, i, err)
				status = 2
				continue
			}
			res.File, res.Index = file, i
			if err := enc.Encode(res); err != nil {
				fmt.Fprintln(stderr, "validate-istio:", err)
				return 2
			}
			if res.Result == "error" && status == 0 {
				status = 1
			}
		}
	}
	return status
}

// Istio's logger writes to stdout by default; stdout carries only the JSON lines.
func quietIstioLog() {
	o := istiolog.DefaultOptions()
	o.OutputPaths = []string{"stderr"}
	o.SetDefaultOutputLevel(istiolog.DefaultScopeName, istiolog.WarnLevel)
	_ = istiolog.Configure(o)
}

func readInput(file string, stdin io.Reader) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(file)
}

// splitDocuments returns the non-empty documents of a YAML stream, as YAML.
func splitDocuments(data []byte) ([][]byte, error) {
	r := kubeyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var probe any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("document %d: %v", len(docs), err)
		}
		if probe == nil { // only comments or whitespace
			continue
		}
		docs = append(docs, doc)
	}
}

// crdSchema is what the apiserver keeps per served version of a CRD.
type crdSchema struct {
	namespaced bool
	validator  crvalidation.SchemaCreateValidator
	structural *structuralschema.Structural
	cel        *cel.Validator
}

type validator struct {
	crds map[schema.GroupVersionKind]*crdSchema
}

// Compiling the CRDs' CEL rules takes seconds; do it once per process.
var loadValidator = sync.OnceValues(newValidator)

func newValidator() (*validator, error) {
	crds, err := loadCRDs()
	if err != nil {
		return nil, err
	}
	return &validator{crds: crds}, nil
}

// loadCRDs reads the CRDs compiled into istio.io/istio/manifests (what istioctl installs).
// istio.io/istio/pkg/config/crd does the same from files, but it imports pkg/test/env, whose
// initialisation logs machine paths on every run.
func loadCRDs() (map[schema.GroupVersionKind]*crdSchema, error) {
	data, err := manifests.FS.ReadFile(crdPath)
	if err != nil {
		return nil, err
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", crdPath, err)
	}
	out := map[schema.GroupVersionKind]*crdSchema{}
	for _, doc := range docs {
		var v1crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(doc, &v1crd); err != nil {
			return nil, fmt.Errorf("%s: %v", crdPath, err)
		}
		if v1crd.Kind != "CustomResourceDefinition" {
			continue
		}
		var crd apiextensions.CustomResourceDefinition
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1crd, &crd, nil); err != nil {
			return nil, err
		}
		for _, ver := range crd.Spec.Versions {
			// The internal form keeps a schema shared by all versions in spec.validation.
			validation := ver.Schema
			if validation == nil {
				validation = crd.Spec.Validation
			}
			if !ver.Served || validation == nil {
				continue
			}
			sv, _, err := crvalidation.NewSchemaValidator(validation.OpenAPIV3Schema)
			if err != nil {
				return nil, fmt.Errorf("CRD %s %s: %v", crd.Name, ver.Name, err)
			}
			st, err := structuralschema.NewStructural(validation.OpenAPIV3Schema)
			if err != nil {
				return nil, fmt.Errorf("CRD %s %s: %v", crd.Name, ver.Name, err)
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: ver.Name, Kind: crd.Spec.Names.Kind}
			out[gvk] = &crdSchema{
				namespaced: crd.Spec.Scope == apiextensions.NamespaceScoped,
				validator:  sv,
				structural: st,
				cel:        cel.NewValidator(st, true, celconfig.PerCallLimit),
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no CRDs", crdPath)
	}
	return out, nil
}

func tempFile(pattern string, data []byte) (string, func(), error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.Remove(f.Name()) }
	if _, err := f.Write(data); err != nil {
		f.Close()
		cleanup()
		return "", nil, err
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, err
	}
	return f.Name(), cleanup, nil
}

// validate returns an error only when the document is not a YAML object.
func (v *validator) validate(doc []byte) (*Result, error) {
	obj := map[string]any{}
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return nil, err
	}
	un := &unstructured.Unstructured{Object: obj}
	res := &Result{
		APIVersion: un.GetAPIVersion(),
		Kind:       un.GetKind(),
		Namespace:  un.GetNamespace(),
		Name:       un.GetName(),
		Result:     "skip",
		Errors:     []string{},
		Warnings:   []string{},
	}
	gvk := un.GroupVersionKind()
	if !istioGroups[gvk.Group] {
		return res, nil
	}
	// Duplicate keys: the apiserver's strict field validation and istioctl refuse them.
	if _, err := yaml.YAMLToJSONStrict(doc); err != nil {
		res.addErr("decode", err)
	}
	if gvk.GroupKind() == operatorapis.IstioOperatorGVK.GroupKind() {
		v.validateIstioOperator(doc, un, res)
	} else {
		v.validateCR(un, res)
	}
	sort.Strings(res.Errors)
	sort.Strings(res.Warnings)
	res.Result = "ok"
	if len(res.Errors) > 0 {
		res.Result = "error"
	}
	return res, nil
}

// validateCR does for one Istio custom resource what the apiserver and istiod's webhook do.
func (v *validator) validateCR(un *unstructured.Unstructured, res *Result) {
	gvk := un.GroupVersionKind()
	// kubectl apply fills in the context namespace; the validity of some resources depends on it.
	un = un.DeepCopy()
	if un.GetNamespace() == "" {
		un.SetNamespace("default")
	}

	if crd := v.crds[gvk]; crd != nil {
		apiserver(un, crd, res)
	} else {
		res.addErr("apiserver", fmt.Errorf("no CRD in Istio's base chart serves %v", gvk))
	}

	// istiod webhook: the version is ignored there, as every served version has the same schema.
	for key := range un.Object {
		if !topLevelFields[key] {
			res.addErr("webhook", fmt.Errorf("unknown field %q on %s resource %s/%s", key, gvk.Kind, un.GetNamespace(), un.GetName()))
		}
	}
	kindSchema, ok := collections.PilotGatewayAPI().FindByGroupKind(resource.FromKubernetesGVK(&gvk))
	if !ok {
		res.addErr("webhook", fmt.Errorf("unrecognized type %v", gvk))
		return
	}
	raw, err := json.Marshal(un.Object)
	if err != nil {
		res.addErr("webhook", err)
		return
	}
	var kind pilotcrd.IstioKind
	if err := json.Unmarshal(raw, &kind); err != nil {
		res.addErr("webhook", fmt.Errorf("cannot decode configuration: %v", err))
		return
	}
	cfg, err := pilotcrd.ConvertObject(kindSchema, &kind, "cluster.local")
	if err != nil {
		res.addErr("webhook", fmt.Errorf("error decoding configuration: %v", err))
		return
	}
	warnings, err := kindSchema.ValidateConfig(*cfg)
	res.addErr("webhook", err)
	res.addWarning("webhook", warnings)

	// The webhook converts leniently (unknown fields dropped); istioctl validate does not.
	if len(kind.Spec) > 0 {
		strict, err := kindSchema.NewInstance()
		if err == nil {
			err = config.ApplyJSONStrict(strict, string(kind.Spec))
		}
		res.addErr("decode", err)
	}
}

// apiserver runs the checks kube-apiserver applies to a custom resource before admission webhooks.
func apiserver(un *unstructured.Unstructured, crd *crdSchema, res *Result) {
	un = un.DeepCopy()
	for _, e := range apivalidation.ValidateObjectMetaAccessor(un, crd.namespaced, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata")) {
		res.addErr("apiserver", e)
	}
	unknown := pruning.PruneWithOptions(un.DeepCopy().Object, crd.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, path := range unknown {
		// Istio's CRDs leave metadata unspecified; the apiserver checks it as ObjectMeta above.
		if !strings.HasPrefix(path, "metadata.") {
			res.addErr("apiserver", fmt.Errorf("unknown field %q", path))
		}
	}
	structuraldefaulting.Default(un.Object, crd.structural)
	for _, e := range crvalidation.ValidateCustomResource(nil, un.Object, crd.validator) {
		res.addErr("apiserver", e)
	}
	for _, e := range listtype.ValidateListSetsAndMaps(nil, crd.structural, un.Object) {
		res.addErr("apiserver", e)
	}
	if crd.cel != nil {
		errs, _ := crd.cel.Validate(context.Background(), nil, crd.structural, un.Object, nil, celconfig.RuntimeCELCostBudget)
		for _, e := range errs {
			res.addErr("apiserver", e)
		}
	}
}

// validateIstioOperator does what istioctl validate and istioctl install check, with no cluster.
func (v *validator) validateIstioOperator(doc []byte, un *unstructured.Unstructured, res *Result) {
	if un.GetKind() != operatorapis.IstioOperatorGVK.Kind {
		res.addErr("istioctl", fmt.Errorf("unrecognized type %v", un.GroupVersionKind()))
		return
	}
	if un.GroupVersionKind().Version != operatorapis.IstioOperatorGVK.Version {
		res.addErr("istioctl", fmt.Errorf("unsupported version %q of IstioOperator, want %s",
			un.GroupVersionKind().Version, operatorapis.IstioOperatorGVK.GroupVersion()))
		return
	}
	// istioctl validate: the document alone.
	warnings, errs := operatorvalidation.ParseAndValidateIstioOperator(values.Map(un.Object), nil)
	for _, e := range errs {
		res.addErr("istioctl validate", e)
	}
	for _, w := range warnings {
		res.addWarning("istioctl validate", w)
	}
	// istioctl install: the document merged onto its profile, as rendered before install.
	path, cleanup, err := tempFile("istio-operator-*.yaml", doc)
	if err != nil {
		res.addErr("istioctl install", err)
		return
	}
	defer cleanup()
	merged, err := render.MergeInputs([]string{path}, nil, nil)
	if err != nil {
		res.addErr("istioctl install", err)
		return
	}
	warnings, errs = operatorvalidation.ParseAndValidateIstioOperator(merged, nil)
	for _, e := range errs {
		res.addErr("istioctl install", e)
	}
	for _, w := range warnings {
		res.addWarning("istioctl install", w)
	}
	res.Errors = dedupe(res.Errors)
	res.Warnings = dedupe(res.Warnings)
}

func (r *Result) addErr(stage string, err error) {
	for _, e := range flatten(err) {
		r.Errors = append(r.Errors, stage+": "+e)
	}
}

func (r *Result) addWarning(stage string, w validation.Warning) {
	for _, e := range flatten(w) {
		r.Warnings = append(r.Warnings, stage+": "+e)
	}
}

// flatten lists the messages of a (multi)error, one per rule that failed.
func flatten(err error) []string {
	if err == nil {
		return nil
	}
	var me *multierror.Error
	if errors.As(err, &me) {
		var out []string
		for _, e := range me.Errors {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []string{strings.TrimSpace(err.Error())}
}

// The same operator rule can fail on the document and on the merged result; say it once.
func dedupe(msgs []string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, m := range msgs {
		key := m[strings.Index(m, ": ")+2:]
		if !seen[key] {
			seen[key] = true
			out = append(out, m)
		}
	}
	return out
}
