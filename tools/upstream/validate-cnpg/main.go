// validate-cnpg checks CloudNativePG documents of YAML streams against the operator's own API.
//
//	validate-cnpg FILE...   (FILE "-" reads stdin)
//
// For each document of group postgresql.cnpg.io:
//   - decode: strict decode into the upstream Go type (unknown or duplicate fields refused), as
//     the apiserver's strict field validation does;
//   - apiserver: metadata rules, then the CRD's OpenAPI schema, list types, unknown fields and CEL
//     rules (x-kubernetes-validations), using the CRDs of the release manifest compiled into the
//     module (package releases);
//   - cnpg: for a Cluster, the defaulting webhook (Cluster.Default, public in api/v1) and the
//     public checks the operator applies to it. The validating webhook itself is under internal/
//     and cannot be imported, so its rules (internal/webhook/v1/cluster_webhook.go) do not run.
//
// One JSON object per non-empty document goes to stdout; index counts non-empty documents from 0.
// Exit status: 0 no errors, 1 some document has errors, 2 some input could not be read or parsed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/postgres/hba"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/utils/extensions"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/versions"
	"github.com/cloudnative-pg/cloudnative-pg/releases"
	"github.com/cloudnative-pg/machinery/pkg/stringset"
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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

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
		fmt.Fprintln(stderr, "usage: validate-cnpg FILE...   (FILE - reads stdin)")
		return 2
	}
	v, err := loadValidator()
	if err != nil {
		fmt.Fprintln(stderr, "validate-cnpg:", err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	status := 0
	for _, file := range args {
		data, err := readInput(file, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "validate-cnpg: %s: %v\n", file, err)
			status = 2
			continue
		}
		docs, err := splitDocuments(data)
		if err != nil {
			fmt.Fprintf(stderr, "validate-cnpg: %s: %v\n", file, err)
			status = 2
			continue
		}
		for i, doc := range docs {
			res, err := v.validate(doc)
			if err != nil {
				fmt.Fprintf(stderr, "validate-cnpg: %s: document %d: %v\n", file, i, err)
				status = 2
				continue
			}
			res.File, res.Index = file, i
			if err := enc.Encode(res); err != nil {
				fmt.Fprintln(stderr, "validate-cnpg:", err)
				return 2
			}
			if res.Result == "error" && status == 0 {
				status = 1
			}
		}
	}
	return status
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
	scheme *runtime.Scheme
	crds   map[schema.GroupVersionKind]*crdSchema
}

// Compiling the CRDs' CEL rules takes seconds; do it once per process.
var loadValidator = sync.OnceValues(newValidator)

func newValidator() (*validator, error) {
	scheme := runtime.NewScheme()
	if err := apiv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	crds, err := loadCRDs()
	if err != nil {
		return nil, err
	}
	return &validator{scheme: scheme, crds: crds}, nil
}

// loadCRDs reads the CRDs from the operator manifest of this very release, which the module embeds.
func loadCRDs() (map[schema.GroupVersionKind]*crdSchema, error) {
	name := "cnpg-" + versions.Version + ".yaml"
	data, err := releases.OperatorManifests.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("release manifest %s: %v", name, err)
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("release manifest %s: %v", name, err)
	}
	out := map[schema.GroupVersionKind]*crdSchema{}
	for _, doc := range docs {
		var head struct{ Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil || head.Kind != "CustomResourceDefinition" {
			continue
		}
		var v1crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(doc, &v1crd); err != nil {
			return nil, fmt.Errorf("release manifest %s: %v", name, err)
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
		return nil, fmt.Errorf("release manifest %s: no CRDs", name)
	}
	return out, nil
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
	if gvk.Group != apiv1.SchemeGroupVersion.Group {
		return res, nil
	}
	res.Result = "ok"
	defer func() {
		sort.Strings(res.Errors)
		if len(res.Errors) > 0 {
			res.Result = "error"
		}
	}()

	typed, err := v.scheme.New(gvk)
	if err != nil {
		res.addErr("decode", fmt.Errorf("no kind %q in version %q known to CloudNativePG %s", gvk.Kind, gvk.GroupVersion(), versions.Version))
		return res, nil
	}
	if err := yaml.UnmarshalStrict(doc, typed); err != nil {
		res.addErr("decode", err)
	}

	crd := v.crds[gvk]
	if crd == nil {
		res.addErr("apiserver", fmt.Errorf("no CRD in CloudNativePG %s serves %v", versions.Version, gvk))
		return res, nil
	}
	v.apiserver(un.DeepCopy(), crd, res)

	if cluster, ok := typed.(*apiv1.Cluster); ok {
		checkCluster(cluster, res)
	}
	return res, nil
}

// apiserver runs the checks kube-apiserver applies to a custom resource before admission webhooks.
func (v *validator) apiserver(un *unstructured.Unstructured, crd *crdSchema, res *Result) {
	if crd.namespaced && un.GetNamespace() == "" {
		un.SetNamespace("default") // kubectl fills in the context's namespace
	}
	for _, e := range apivalidation.ValidateObjectMetaAccessor(un, crd.namespaced, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata")) {
		res.addErr("apiserver", e)
	}
	unknown := pruning.PruneWithOptions(un.DeepCopy().Object, crd.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, path := range unknown {
		// The CRDs leave metadata unspecified; the apiserver checks it as ObjectMeta above.
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

// checkCluster runs CloudNativePG's public defaulting and checks on a Cluster.
func checkCluster(cluster *apiv1.Cluster, res *Result) {
	// The mutating webhook calls Default(); the operator sees the defaulted spec.
	cluster.Default()
	if _, err := cluster.GetPostgresqlMajorVersion(); err != nil {
		res.addErr("cnpg", err)
	}
	if rs := cluster.Spec.ReplicationSlots; rs != nil && rs.SynchronizeReplicas != nil {
		res.addErr("cnpg", rs.SynchronizeReplicas.ValidateRegex())
	}
	if cluster.Spec.ImageCatalogRef == nil {
		if _, err := extensions.ValidateWithoutCatalog(cluster); err != nil {
			res.addErr("cnpg", err)
		}
	}
	selectors := stringset.New()
	for _, ref := range cluster.Spec.PodSelectorRefs {
		selectors.Put(ref.Name)
	}
	for i, line := range cluster.Spec.PostgresConfiguration.PgHBA {
		if err := hba.ValidateLine(line, selectors); err != nil {
			res.addErr("cnpg", fmt.Errorf("spec.postgresql.pg_hba[%d]: %v", i, err))
		}
	}
}

func (r *Result) addErr(stage string, err error) {
	if err == nil {
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(err.Error()), "\n") {
		r.Errors = append(r.Errors, stage+": "+line)
	}
}
