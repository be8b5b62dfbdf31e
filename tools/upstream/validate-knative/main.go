// Command validate-knative runs, without a cluster, what Knative v1.23's admission
// webhooks run on every object we apply: strict decode, SetDefaults(ctx), then
// Validate(ctx) as on create, with the configuration a cluster's ConfigMaps would put
// into ctx. Everything comes from the upstream modules (see go.mod); nothing is copied.
//
//	validate-knative [--config FILE]... FILE...
//	validate-knative domain --config FILE... --namespace NS --name NAME [--label k=v]...
//
// FILE "-" is stdin. One JSON object per document on stdout; exit 0 when no document
// errs, 1 when one does, 2 when an input cannot be read or parsed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"knative.dev/pkg/apis"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/logging"
	pkgjson "knative.dev/pkg/webhook/json"
	"knative.dev/pkg/webhook/resourcesemantics"

	netv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	netcfg "knative.dev/networking/pkg/config"

	servingconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingv1beta1 "knative.dev/serving/pkg/apis/serving/v1beta1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/gc"
	routecfg "knative.dev/serving/pkg/reconciler/route/config"
	"knative.dev/serving/pkg/reconciler/route/domains"
	routelabels "knative.dev/serving/pkg/reconciler/route/resources/labels"
	"knative.dev/serving/pkg/reconciler/route/traffic"
	"knative.dev/serving/pkg/reconciler/route/visibility"
	ksvcresources "knative.dev/serving/pkg/reconciler/service/resources"

	eventingconfig "knative.dev/eventing/pkg/apis/config"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	eventingv1alpha1 "knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	eventingv1beta1 "knative.dev/eventing/pkg/apis/eventing/v1beta1"
	eventingv1beta2 "knative.dev/eventing/pkg/apis/eventing/v1beta2"
	"knative.dev/eventing/pkg/apis/feature"
	flowsv1 "knative.dev/eventing/pkg/apis/flows/v1"
	channelconfig "knative.dev/eventing/pkg/apis/messaging/config"
	messagingv1 "knative.dev/eventing/pkg/apis/messaging/v1"
	pingconfig "knative.dev/eventing/pkg/apis/sources/config"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	sourcesv1alpha1 "knative.dev/eventing/pkg/apis/sources/v1alpha1"
	sourcesv1beta2 "knative.dev/eventing/pkg/apis/sources/v1beta2"
)

const (
	servingNS  = "knative-serving"
	eventingNS = "knative-eventing"

	exitOK      = 0
	exitInvalid = 1
	exitInput   = 2
)

// The groups whose documents we check; everything else is reported as "skip".
var handledGroups = map[string]bool{
	"serving.knative.dev":   true,
	"eventing.knative.dev":  true,
	"sources.knative.dev":   true,
	"messaging.knative.dev": true,
	"flows.knative.dev":     true,
}

// Eventing's cluster-wide defaults cannot be empty: NewDefaultsConfigFromMap and
// NewChannelDefaultsConfigFromMap refuse a ConfigMap without their key, and every
// install has one. These are the values eventing v0.50.0 ships
// (config/core/configmaps/default-broker.yaml, default-channel.yaml without its
// example namespace); main_test.go checks they still parse to what upstream ships.
const (
	defaultBrokerConfig = `clusterDefault:
  brokerClass: MTChannelBasedBroker
  apiVersion: v1
  kind: ConfigMap
  name: config-br-default-channel
  namespace: knative-eventing
  delivery:
    retry: 10
    backoffPolicy: exponential
    backoffDelay: PT0.2S
`
	defaultChannelConfig = `clusterDefault:
  apiVersion: messaging.knative.dev/v1
  kind: InMemoryChannel
`
)

// knownConfigMaps is every ConfigMap some store below reads, with the data a fresh
// install has. Serving ships all of these with only an `_example` key, which the
// parsers ignore, so empty data is the installed state.
func knownConfigMaps() map[string]map[string]map[string]string {
	return map[string]map[string]map[string]string{
		servingNS: {
			// read by serving's webhook (cmd/webhook: apisconfig.NewStore)
			servingconfig.DefaultsConfigName: {},
			servingconfig.FeaturesConfigName: {},
			asconfig.ConfigName:              {},
			// read by the route reconciler (reconciler/route/config.NewStore)
			routecfg.DomainConfigName: {},
			netcfg.ConfigMapName:      {},
			gc.ConfigName:             {},
		},
		eventingNS: {
			eventingconfig.DefaultsConfigName:       {eventingconfig.BrokerDefaultsKey: defaultBrokerConfig},
			channelconfig.ChannelDefaultsConfigName: {channelconfig.ChannelDefaulterKey: defaultChannelConfig},
			pingconfig.PingDefaultsConfigName:       {},
			feature.FlagsConfigName:                 {},
		},
	}
}

// configSet is the effective ConfigMaps: defaults replaced, by name, by --config ones
// (a ConfigMap in the cluster replaces the shipped one as a whole).
type configSet map[string]map[string]*corev1.ConfigMap

func newConfigSet() configSet {
	cs := configSet{}
	for ns, byName := range knownConfigMaps() {
		cs[ns] = map[string]*corev1.ConfigMap{}
		for name, data := range byName {
			cs[ns][name] = &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Data:       data,
			}
		}
	}
	return cs
}

// add overrides one ConfigMap. The namespace tells serving's config-features from
// eventing's; without one the name must be unambiguous.
func (cs configSet) add(cm *corev1.ConfigMap, given map[string]bool, warn io.Writer) error {
	ns := cm.Namespace
	if ns == "" {
		var in []string
		for n, byName := range cs {
			if _, ok := byName[cm.Name]; ok {
				in = append(in, n)
			}
		}
		switch len(in) {
		case 0:
			fmt.Fprintf(warn, "validate-knative: ConfigMap %q is read by no check here; ignored\n", cm.Name)
			return nil
		case 1:
			ns = in[0]
		default:
			sort.Strings(in)
			return fmt.Errorf("ConfigMap %q has no namespace and exists in %s: set metadata.namespace", cm.Name, strings.Join(in, " and "))
		}
	}
	byName := cs[ns]
	if _, ok := byName[cm.Name]; !ok {
		fmt.Fprintf(warn, "validate-knative: ConfigMap %s/%s is read by no check here; ignored\n", ns, cm.Name)
		return nil
	}
	key := ns + "/" + cm.Name
	if given[key] {
		// kubectl apply would merge or replace depending on history; make the caller say which.
		return fmt.Errorf("ConfigMap %s given twice", key)
	}
	given[key] = true
	c := cm.DeepCopy()
	c.Namespace = ns
	if c.Data == nil {
		c.Data = map[string]string{}
	}
	byName[cm.Name] = c
	return nil
}

func (cs configSet) watcher(ns string) *configmap.StaticWatcher {
	var cms []*corev1.ConfigMap
	for _, cm := range cs[ns] {
		cms = append(cms, cm)
	}
	return configmap.NewStaticWatcher(cms...)
}

// storeLogger records what config stores report. UntypedStore logs Fatalf when a
// ConfigMap does not parse; zap would exit there, but we want a message and exit 2,
// so the fatal hook returns and the store is left empty (checked below).
func storeLogger() (*zap.SugaredLogger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.ErrorLevel)
	return zap.New(core, zap.WithFatalHook(keepGoing{})).Sugar(), logs
}

type keepGoing struct{}

func (keepGoing) OnWrite(*zapcore.CheckedEntry, []zapcore.Field) {}

// webhook is one admission webhook: the kinds it serves and the ctx decoration its
// defaulting and validating controllers use.
type webhook struct {
	types      map[schema.GroupVersionKind]resourcesemantics.GenericCRD
	defaulting func(context.Context) context.Context
	validating func(context.Context) context.Context
}

// stores holds the upstream config stores, filled from a configSet the way the
// webhooks' and the route reconciler's ConfigMap watchers fill them.
type stores struct {
	webhooks []webhook
	route    *routecfg.Store
}

func newStores(ctx context.Context, cs configSet) (*stores, error) {
	log, logs := storeLogger()
	ctx = logging.WithLogger(ctx, log)

	// Serving's webhook (serving cmd/webhook/main.go): one apisconfig store
	// (config-defaults, config-features, config-autoscaler) for both controllers.
	servingStore := servingconfig.NewStore(log)
	servingStore.WatchConfigs(cs.watcher(servingNS))

	// Eventing's webhook (eventing cmd/webhook/main.go): defaulting gets
	// br-defaults, channel defaults and features; validation also ping defaults.
	evStore := eventingconfig.NewStore(log)
	evStore.WatchConfigs(cs.watcher(eventingNS))
	chStore := channelconfig.NewStore(log)
	chStore.WatchConfigs(cs.watcher(eventingNS))
	pingStore := pingconfig.NewStore(log)
	pingStore.WatchConfigs(cs.watcher(eventingNS))
	featStore := feature.NewStore(log)
	featStore.WatchConfigs(cs.watcher(eventingNS))

	// The route reconciler's store, for `domain` (and so a bad config-domain or
	// config-network fails here as serving's config webhook would refuse it).
	route := routecfg.NewStore(ctx)
	route.WatchConfigs(cs.watcher(servingNS))

	if logs.Len() > 0 {
		var msgs []string
		for _, e := range logs.All() {
			msgs = append(msgs, e.Message)
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}

	evDefaulting := func(ctx context.Context) context.Context {
		return featStore.ToContext(chStore.ToContext(evStore.ToContext(ctx)))
	}
	// Upstream also adds sinks.WithConfig (a kube client) for JobSink, a kind of
	// sinks.knative.dev, which we do not handle.
	evValidating := func(ctx context.Context) context.Context {
		return featStore.ToContext(chStore.ToContext(pingStore.ToContext(evStore.ToContext(ctx))))
	}
	noop := func(ctx context.Context) context.Context { return ctx }

	return &stores{
		route: route,
		webhooks: []webhook{{
			// serving cmd/webhook: `types` (minus autoscaling and networking.internal).
			types: map[schema.GroupVersionKind]resourcesemantics.GenericCRD{
				servingv1.SchemeGroupVersion.WithKind("Revision"):           &servingv1.Revision{},
				servingv1.SchemeGroupVersion.WithKind("Configuration"):      &servingv1.Configuration{},
				servingv1.SchemeGroupVersion.WithKind("Route"):              &servingv1.Route{},
				servingv1.SchemeGroupVersion.WithKind("Service"):            &servingv1.Service{},
				servingv1beta1.SchemeGroupVersion.WithKind("DomainMapping"): &servingv1beta1.DomainMapping{},
			},
			defaulting: servingStore.ToContext,
			validating: servingStore.ToContext,
		}, {
			// eventing cmd/webhook: `ourTypes` (minus sinks.knative.dev).
			types: map[schema.GroupVersionKind]resourcesemantics.GenericCRD{
				eventingv1alpha1.SchemeGroupVersion.WithKind("EventPolicy"):      &eventingv1alpha1.EventPolicy{},
				eventingv1alpha1.SchemeGroupVersion.WithKind("EventTransform"):   &eventingv1alpha1.EventTransform{},
				eventingv1alpha1.SchemeGroupVersion.WithKind("RequestReply"):     &eventingv1alpha1.RequestReply{},
				eventingv1beta1.SchemeGroupVersion.WithKind("EventType"):         &eventingv1beta1.EventType{},
				eventingv1beta2.SchemeGroupVersion.WithKind("EventType"):         &eventingv1beta2.EventType{},
				eventingv1.SchemeGroupVersion.WithKind("Broker"):                 &eventingv1.Broker{},
				eventingv1.SchemeGroupVersion.WithKind("Trigger"):                &eventingv1.Trigger{},
				messagingv1.SchemeGroupVersion.WithKind("Channel"):               &messagingv1.Channel{},
				messagingv1.SchemeGroupVersion.WithKind("Subscription"):          &messagingv1.Subscription{},
				sourcesv1alpha1.SchemeGroupVersion.WithKind("IntegrationSource"): &sourcesv1alpha1.IntegrationSource{},
				sourcesv1beta2.SchemeGroupVersion.WithKind("PingSource"):         &sourcesv1beta2.PingSource{},
				sourcesv1.SchemeGroupVersion.WithKind("ApiServerSource"):         &sourcesv1.ApiServerSource{},
				sourcesv1.SchemeGroupVersion.WithKind("PingSource"):              &sourcesv1.PingSource{},
				sourcesv1.SchemeGroupVersion.WithKind("SinkBinding"):             &sourcesv1.SinkBinding{},
				sourcesv1.SchemeGroupVersion.WithKind("ContainerSource"):         &sourcesv1.ContainerSource{},
				flowsv1.SchemeGroupVersion.WithKind("Parallel"):                  &flowsv1.Parallel{},
				flowsv1.SchemeGroupVersion.WithKind("Sequence"):                  &flowsv1.Sequence{},
			},
			defaulting: evDefaulting,
			validating: evValidating,
		}, {
			// The in-memory channel has its own webhook
			// (eventing cmd/in_memory/channel_controller), with no ctx decoration.
			types: map[schema.GroupVersionKind]resourcesemantics.GenericCRD{
				messagingv1.SchemeGroupVersion.WithKind("InMemoryChannel"): &messagingv1.InMemoryChannel{},
			},
			defaulting: noop,
			validating: noop,
		}},
	}, nil
}

func (s *stores) lookup(gvk schema.GroupVersionKind) (resourcesemantics.GenericCRD, *webhook) {
	for i := range s.webhooks {
		if t, ok := s.webhooks[i].types[gvk]; ok {
			return t, &s.webhooks[i]
		}
	}
	return nil, nil
}

// The API server fills in the requesting user; the defaulting webhook turns it into
// creator/updater annotations, so give it one.
var user = &authenticationv1.UserInfo{Username: "validate-knative"}

// admit does what the mutating and then the validating webhook do on a create:
// knative.dev/pkg webhook/resourcesemantics/defaulting (mutate) and validation
// (decodeRequestAndPrepareContext, validate). It returns error-level messages;
// warnings go to warn. Serving's webhook decodes leniently and leaves unknown fields
// to the API server's schema (kubectl's default --validate=strict refuses them);
// we decode strictly for both, as eventing's does.
func (s *stores) admit(ctx context.Context, gvk schema.GroupVersionKind, raw []byte, warn func(string)) []string {
	proto, wh := s.lookup(gvk)
	if proto == nil {
		return []string{fmt.Sprintf("no Knative webhook serves %s (the API server would answer: no matches for kind)", gvk)}
	}

	obj := proto.DeepCopyObject().(resourcesemantics.GenericCRD)
	if err := pkgjson.Decode(raw, obj, true); err != nil {
		return []string{fmt.Sprintf("mutation failed: cannot decode incoming new object: %v", err)}
	}
	dctx := apis.WithUserInfo(apis.WithinCreate(wh.defaulting(ctx)), user)
	obj.SetDefaults(dctx)

	// The validating webhook decodes the patched object afresh.
	patched, err := json.Marshal(obj)
	if err != nil {
		return []string{fmt.Sprintf("cannot encode defaulted object: %v", err)}
	}
	obj = proto.DeepCopyObject().(resourcesemantics.GenericCRD)
	if err := pkgjson.Decode(patched, obj, true); err != nil {
		return []string{fmt.Sprintf("validation failed: cannot decode incoming new object: %v", err)}
	}
	vctx := apis.WithUserInfo(apis.WithinCreate(wh.validating(ctx)), user)
	// serving's extra callback (pkg/webhook.ValidateService) only acts on
	// server-side dry-run, against the cluster: not reproducible offline.
	fe := obj.Validate(vctx)
	if w := fe.Filter(apis.WarningLevel); w != nil {
		for _, e := range w.WrappedErrors() {
			warn(e.Error())
		}
	}
	var out []string
	if e := fe.Filter(apis.ErrorLevel); e != nil {
		for _, x := range e.WrappedErrors() {
			out = append(out, x.Error())
		}
	}
	return out
}

// document is one object of an input stream.
type document struct {
	index int
	raw   map[string]interface{}
}

// readStream splits a multi-document YAML stream into objects; empty documents are
// dropped and a v1 List is expanded into its items, as kubectl does.
func readStream(r io.Reader) ([]document, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var docs []document
	for {
		b, err := reader.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		// Strict: duplicate keys are refused (kubectl's field validation refuses them too).
		j, err := yaml.YAMLToJSONStrict(b)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs), err)
		}
		j = bytes.TrimSpace(j)
		if len(j) == 0 || string(j) == "null" {
			continue
		}
		var m map[string]interface{}
		if err := json.Unmarshal(j, &m); err != nil {
			return nil, fmt.Errorf("document %d is not a mapping: %w", len(docs), err)
		}
		if m["apiVersion"] == "v1" && m["kind"] == "List" {
			items, _ := m["items"].([]interface{})
			for _, it := range items {
				im, ok := it.(map[string]interface{})
				if !ok {
					return nil, fmt.Errorf("document %d: List item is not a mapping", len(docs))
				}
				docs = append(docs, document{index: len(docs), raw: im})
			}
			continue
		}
		docs = append(docs, document{index: len(docs), raw: m})
	}
}

func openInput(name string, stdin io.Reader) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(stdin), nil
	}
	return os.Open(name)
}

func str(m map[string]interface{}, key string) string {
	s, _ := m[key].(string)
	return s
}

func metaOf(m map[string]interface{}) map[string]interface{} {
	md, _ := m["metadata"].(map[string]interface{})
	if md == nil {
		md = map[string]interface{}{}
		m["metadata"] = md
	}
	return md
}

// result is the line written per document; other code depends on these fields.
type result struct {
	File       string   `json:"file"`
	Index      int      `json:"index"`
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Name       string   `json:"name"`
	Result     string   `json:"result"`
	Errors     []string `json:"errors"`
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseInterleaved lets flags and operands mix (Go's flag package stops at the first
// operand).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return operands, nil
		}
		operands = append(operands, args[0])
		args = args[1:]
	}
}

// loadConfigs reads --config streams of ConfigMaps into a configSet.
func loadConfigs(files []string, stdin io.Reader, stderr io.Writer) (configSet, error) {
	cs := newConfigSet()
	given := map[string]bool{}
	for _, f := range files {
		rc, err := openInput(f, stdin)
		if err != nil {
			return nil, err
		}
		docs, err := readStream(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, d := range docs {
			// Other documents are let through, so a rendered overlay (istio/domain
			// holds a DomainMapping beside config-domain) can be given as it is.
			if str(d.raw, "apiVersion") != "v1" || str(d.raw, "kind") != "ConfigMap" {
				fmt.Fprintf(stderr, "validate-knative: %s[%d]: %s %s is not a ConfigMap; ignored as config\n", f, d.index, str(d.raw, "apiVersion"), str(d.raw, "kind"))
				continue
			}
			b, _ := json.Marshal(d.raw)
			cm := &corev1.ConfigMap{}
			if err := pkgjson.Decode(b, cm, true); err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", f, d.index, err)
			}
			if err := cs.add(cm, given, stderr); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	return cs, nil
}

func baseContext() context.Context {
	// Upstream code logs through the ctx logger; keep stdout/stderr for our output.
	return logging.WithLogger(context.Background(), zap.NewNop().Sugar())
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "domain" {
		return runDomain(args[1:], stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("validate-knative", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var configs multiFlag
	fs.Var(&configs, "config", "YAML stream of Knative ConfigMaps overriding the defaults (repeatable)")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return exitInput
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "usage: validate-knative [--config FILE]... FILE...")
		return exitInput
	}

	ctx := baseContext()
	cs, err := loadConfigs(configs, stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "validate-knative: %v\n", err)
		return exitInput
	}
	st, err := newStores(ctx, cs)
	if err != nil {
		fmt.Fprintf(stderr, "validate-knative: config: %v\n", err)
		return exitInput
	}

	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	code := exitOK
	for _, f := range files {
		rc, err := openInput(f, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "validate-knative: %v\n", err)
			code = exitInput
			continue
		}
		docs, err := readStream(rc)
		rc.Close()
		if err != nil {
			fmt.Fprintf(stderr, "validate-knative: %s: %v\n", f, err)
			code = exitInput
			continue
		}
		for _, d := range docs {
			r := check(ctx, st, f, d, stderr)
			if r.Result == "error" && code == exitOK {
				code = exitInvalid
			}
			if err := enc.Encode(r); err != nil {
				fmt.Fprintf(stderr, "validate-knative: %v\n", err)
				return exitInput
			}
		}
	}
	return code
}

func check(ctx context.Context, st *stores, file string, d document, stderr io.Writer) result {
	md := metaOf(d.raw)
	r := result{
		File:       file,
		Index:      d.index,
		APIVersion: str(d.raw, "apiVersion"),
		Kind:       str(d.raw, "kind"),
		Namespace:  str(md, "namespace"),
		Name:       str(md, "name"),
		Result:     "skip",
		Errors:     []string{},
	}
	gv, err := schema.ParseGroupVersion(r.APIVersion)
	if err != nil || r.APIVersion == "" || r.Kind == "" {
		r.Result = "error"
		r.Errors = []string{fmt.Sprintf("not a Kubernetes object: apiVersion %q, kind %q", r.APIVersion, r.Kind)}
		return r
	}
	if !handledGroups[gv.Group] {
		return r
	}
	// The API server sets the request's namespace before admission; a document
	// without one lands in kubectl's namespace, "default" here.
	if r.Namespace == "" {
		r.Namespace = "default"
		md["namespace"] = r.Namespace
	}
	raw, err := json.Marshal(d.raw)
	if err != nil {
		r.Result = "error"
		r.Errors = []string{err.Error()}
		return r
	}
	warn := func(w string) {
		fmt.Fprintf(stderr, "validate-knative: warning: %s[%d] %s %s/%s: %s\n", file, d.index, r.Kind, r.Namespace, r.Name, w)
	}
	if errs := st.admit(ctx, gv.WithKind(r.Kind), raw, warn); len(errs) > 0 {
		r.Result = "error"
		r.Errors = errs
		return r
	}
	r.Result = "ok"
	return r
}

// runDomain prints the host the route reconciler would give a Knative Service:
// route.go updateRouteStatusURL on the Route that the service reconciler makes.
func runDomain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate-knative domain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var configs, labels multiFlag
	fs.Var(&configs, "config", "YAML stream of ConfigMaps (config-domain, config-network) (repeatable)")
	fs.Var(&labels, "label", "label k=v of the Knative Service (repeatable)")
	ns := fs.String("namespace", "", "namespace of the Knative Service")
	name := fs.String("name", "", "name of the Knative Service")
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return exitInput
	}
	if len(rest) > 0 || *ns == "" || *name == "" {
		fmt.Fprintln(stderr, "usage: validate-knative domain --config FILE... --namespace NS --name NAME [--label k=v]...")
		return exitInput
	}
	lbl := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			fmt.Fprintf(stderr, "validate-knative: --label %q is not k=v\n", l)
			return exitInput
		}
		lbl[k] = v
	}

	ctx := baseContext()
	cs, err := loadConfigs(configs, stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "validate-knative: %v\n", err)
		return exitInput
	}
	st, err := newStores(ctx, cs)
	if err != nil {
		fmt.Fprintf(stderr, "validate-knative: config: %v\n", err)
		return exitInput
	}
	host, err := routeHost(st.route.ToContext(ctx), *ns, *name, lbl)
	if err != nil {
		fmt.Fprintf(stderr, "validate-knative: %v\n", err)
		return exitInvalid
	}
	fmt.Fprintln(stdout, host)
	return exitOK
}

func routeHost(ctx context.Context, ns, name string, lbl map[string]string) (string, error) {
	svc := &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl}}
	// The service reconciler's Route: the ksvc's labels plus serving.knative.dev/service.
	route := ksvcresources.MakeRoute(svc)

	// The route reconciler's visibility (config-domain's svc.<cluster domain> or the
	// networking.knative.dev/visibility label); no placeholder Services exist yet.
	empty := corev1listers.NewServiceLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}))
	vis, err := visibility.NewResolver(empty).GetVisibility(ctx, route)
	if err != nil {
		return "", err
	}

	// What route.go updateRouteStatusURL does (unexported there).
	meta := route.ObjectMeta.DeepCopy()
	routelabels.SetVisibility(meta, vis[traffic.DefaultTarget] == netv1alpha1.IngressVisibilityClusterLocal)
	return domains.DomainNameFromTemplate(ctx, *meta, route.Name)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
