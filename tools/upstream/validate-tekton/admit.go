package main

import (
	"context"
	"encoding/json"
	"fmt"

	pconfig "github.com/tektoncd/pipeline/pkg/apis/config"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	pv1alpha1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1alpha1"
	pv1beta1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1beta1"
	tconfig "github.com/tektoncd/triggers/pkg/apis/config"
	"github.com/tektoncd/triggers/pkg/apis/triggers/contexts"
	tv1alpha1 "github.com/tektoncd/triggers/pkg/apis/triggers/v1alpha1"
	tv1beta1 "github.com/tektoncd/triggers/pkg/apis/triggers/v1beta1"
	"go.uber.org/zap"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/logging"
	webhookjson "knative.dev/pkg/webhook/json"
	"knative.dev/pkg/webhook/resourcesemantics"
)

// kinds is what the two webhooks register (the `types` maps in cmd/webhook/main.go of
// tektoncd/pipeline and tektoncd/triggers), restricted to the groups we apply. A kind that
// is not here has no CRD on the cluster, so the API server refuses it.
var kinds = map[schema.GroupVersionKind]func() resourcesemantics.GenericCRD{
	pv1alpha1.SchemeGroupVersion.WithKind("VerificationPolicy"): func() resourcesemantics.GenericCRD { return &pv1alpha1.VerificationPolicy{} },
	pv1alpha1.SchemeGroupVersion.WithKind("StepAction"):         func() resourcesemantics.GenericCRD { return &pv1alpha1.StepAction{} },
	pv1beta1.SchemeGroupVersion.WithKind("Pipeline"):            func() resourcesemantics.GenericCRD { return &pv1beta1.Pipeline{} },
	pv1beta1.SchemeGroupVersion.WithKind("Task"):                func() resourcesemantics.GenericCRD { return &pv1beta1.Task{} },
	pv1beta1.SchemeGroupVersion.WithKind("TaskRun"):             func() resourcesemantics.GenericCRD { return &pv1beta1.TaskRun{} },
	pv1beta1.SchemeGroupVersion.WithKind("PipelineRun"):         func() resourcesemantics.GenericCRD { return &pv1beta1.PipelineRun{} },
	pv1beta1.SchemeGroupVersion.WithKind("CustomRun"):           func() resourcesemantics.GenericCRD { return &pv1beta1.CustomRun{} },
	pv1beta1.SchemeGroupVersion.WithKind("StepAction"):          func() resourcesemantics.GenericCRD { return &pv1beta1.StepAction{} },
	v1.SchemeGroupVersion.WithKind("Task"):                      func() resourcesemantics.GenericCRD { return &v1.Task{} },
	v1.SchemeGroupVersion.WithKind("Pipeline"):                  func() resourcesemantics.GenericCRD { return &v1.Pipeline{} },
	v1.SchemeGroupVersion.WithKind("TaskRun"):                   func() resourcesemantics.GenericCRD { return &v1.TaskRun{} },
	v1.SchemeGroupVersion.WithKind("PipelineRun"):               func() resourcesemantics.GenericCRD { return &v1.PipelineRun{} },

	tv1alpha1.SchemeGroupVersion.WithKind("ClusterTriggerBinding"): func() resourcesemantics.GenericCRD { return &tv1alpha1.ClusterTriggerBinding{} },
	tv1alpha1.SchemeGroupVersion.WithKind("ClusterInterceptor"):    func() resourcesemantics.GenericCRD { return &tv1alpha1.ClusterInterceptor{} },
	tv1alpha1.SchemeGroupVersion.WithKind("Interceptor"):           func() resourcesemantics.GenericCRD { return &tv1alpha1.Interceptor{} },
	tv1alpha1.SchemeGroupVersion.WithKind("EventListener"):         func() resourcesemantics.GenericCRD { return &tv1alpha1.EventListener{} },
	tv1alpha1.SchemeGroupVersion.WithKind("TriggerBinding"):        func() resourcesemantics.GenericCRD { return &tv1alpha1.TriggerBinding{} },
	tv1alpha1.SchemeGroupVersion.WithKind("TriggerTemplate"):       func() resourcesemantics.GenericCRD { return &tv1alpha1.TriggerTemplate{} },
	tv1alpha1.SchemeGroupVersion.WithKind("Trigger"):               func() resourcesemantics.GenericCRD { return &tv1alpha1.Trigger{} },
	tv1beta1.SchemeGroupVersion.WithKind("ClusterTriggerBinding"):  func() resourcesemantics.GenericCRD { return &tv1beta1.ClusterTriggerBinding{} },
	tv1beta1.SchemeGroupVersion.WithKind("EventListener"):          func() resourcesemantics.GenericCRD { return &tv1beta1.EventListener{} },
	tv1beta1.SchemeGroupVersion.WithKind("TriggerBinding"):         func() resourcesemantics.GenericCRD { return &tv1beta1.TriggerBinding{} },
	tv1beta1.SchemeGroupVersion.WithKind("TriggerTemplate"):        func() resourcesemantics.GenericCRD { return &tv1beta1.TriggerTemplate{} },
	tv1beta1.SchemeGroupVersion.WithKind("Trigger"):                func() resourcesemantics.GenericCRD { return &tv1beta1.Trigger{} },
}

// cluster holds the config stores each webhook keeps (filled from --config ConfigMaps,
// upstream defaults for the rest) and the inventory the cross-document checks resolve
// references against.
type cluster struct {
	pipelineStore *pconfig.Store
	triggersStore *tconfig.Store
	inv           inventory
}

// parseWith adapts an upstream NewXFromConfigMap to a plain error check.
func parseWith[T any](f func(*corev1.ConfigMap) (T, error)) func(*corev1.ConfigMap) error {
	return func(cm *corev1.ConfigMap) error { _, err := f(cm); return err }
}

func newCluster(configDocs []*document) (*cluster, []string, error) {
	nop := zap.NewNop().Sugar()
	c := &cluster{
		pipelineStore: pconfig.NewStore(nop),
		triggersStore: tconfig.NewStore(nop),
	}
	// The names each store watches (pkg/apis/config/store.go upstream). The stores only
	// log a constructor's error, so parse first to report it.
	pipelineCMs := map[string]func(*corev1.ConfigMap) error{
		pconfig.GetDefaultsConfigName():               parseWith(pconfig.NewDefaultsFromConfigMap),
		pconfig.GetFeatureFlagsConfigName():           parseWith(pconfig.NewFeatureFlagsFromConfigMap),
		pconfig.GetMetricsConfigName():                parseWith(pconfig.NewMetricsFromConfigMap),
		pconfig.GetSpireConfigName():                  parseWith(pconfig.NewSpireConfigFromConfigMap),
		pconfig.GetEventsConfigName():                 parseWith(pconfig.NewEventsFromConfigMap),
		pconfig.GetTracingConfigName():                parseWith(pconfig.NewTracingFromConfigMap),
		pconfig.GetWaitExponentialBackoffConfigName(): parseWith(pconfig.NewWaitExponentialBackoffFromConfigMap),
	}
	triggersCMs := map[string]func(*corev1.ConfigMap) error{
		tconfig.GetDefaultsConfigName():     parseWith(tconfig.NewDefaultsFromConfigMap),
		tconfig.GetFeatureFlagsConfigName(): parseWith(tconfig.NewFeatureFlagsFromConfigMap),
	}
	var notes []string
	for _, d := range configDocs {
		if d.gvk != corev1.SchemeGroupVersion.WithKind("ConfigMap") {
			return nil, notes, fmt.Errorf("%s: --config takes ConfigMaps, not %s", d.label(), d.gvk)
		}
		cm := &corev1.ConfigMap{}
		if err := json.Unmarshal(d.raw, cm); err != nil {
			return nil, notes, fmt.Errorf("%s: %w", d.label(), err)
		}
		parse, inPipeline := pipelineCMs[cm.Name]
		if !inPipeline {
			var ok bool
			if parse, ok = triggersCMs[cm.Name]; !ok {
				notes = append(notes, fmt.Sprintf("%s: ConfigMap %q is read by neither webhook; ignored", d.label(), cm.Name))
				continue
			}
		}
		if err := parse(cm); err != nil {
			return nil, notes, fmt.Errorf("%s: ConfigMap %q: %w", d.label(), cm.Name, err)
		}
		if inPipeline {
			c.pipelineStore.OnConfigChanged(cm)
		} else {
			c.triggersStore.OnConfigChanged(cm)
		}
	}
	return c, notes, nil
}

// webhookContext is the context a webhook hands to SetDefaults and Validate: its config
// store's snapshot (Triggers also marks it as upgrade-via-defaulting), the request's user,
// and the create operation.
func (c *cluster) webhookContext(group string) context.Context {
	ctx := logging.WithLogger(context.Background(), zap.NewNop().Sugar())
	if group == tv1beta1.SchemeGroupVersion.Group {
		ctx = contexts.WithUpgradeViaDefaulting(c.triggersStore.ToContext(ctx))
	} else {
		ctx = c.pipelineStore.ToContext(ctx)
	}
	ctx = apis.WithUserInfo(ctx, &authenticationv1.UserInfo{Username: "validate-tekton"})
	return apis.WithinCreate(ctx)
}

// reconcilerContext is what the Pipelines controller works with: the same config store,
// outside any admission request.
func (c *cluster) reconcilerContext() context.Context {
	ctx := logging.WithLogger(context.Background(), zap.NewNop().Sugar())
	return c.pipelineStore.ToContext(ctx)
}

// admit runs both admission webhooks on a create of raw (JSON) as gvk. It returns the
// defaulted object (nil if it could not be decoded), the errors that would refuse the
// request, and the warnings the webhook would hand back.
func (c *cluster) admit(gvk schema.GroupVersionKind, raw []byte) (resourcesemantics.GenericCRD, []string, []string) {
	newObj, ok := kinds[gvk]
	if !ok {
		return nil, []string{fmt.Sprintf("no kind %q is served in %s: the API server has no such resource", gvk.Kind, gvk.GroupVersion())}, nil
	}
	ctx := c.webhookContext(gvk.Group)

	// Mutating webhook: strict decode (unknown fields refused), then SetDefaults.
	obj := newObj()
	if err := webhookjson.Decode(raw, obj, true); err != nil {
		return nil, []string{"cannot decode incoming new object: " + err.Error()}, nil
	}
	obj.SetDefaults(ctx)

	// Between the two webhooks the API server turns generateName into a name
	// (rest.BeforeCreate), so the validating webhook sees one.
	if m, err := meta.Accessor(obj); err == nil && m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(generateName(m.GetGenerateName()))
	}

	// Validating webhook: it receives the defaulted object and decodes it strictly again.
	defaulted, err := json.Marshal(obj)
	if err != nil {
		return nil, []string{err.Error()}, nil
	}
	obj = newObj()
	if err := webhookjson.Decode(defaulted, obj, true); err != nil {
		return nil, []string{"cannot decode defaulted object: " + err.Error()}, nil
	}
	errs, warns := splitFieldError(obj.Validate(ctx))
	return obj, errs, warns
}

// generateName is the API server's SimpleNameGenerator with a fixed suffix, so that
// output is stable: the prefix cut to 58 characters, then five.
func generateName(base string) string {
	const maxGeneratedNameLength = 63 - 5
	if len(base) > maxGeneratedNameLength {
		base = base[:maxGeneratedNameLength]
	}
	return base + "x7k2q"
}

// splitFieldError turns a FieldError into one message per error, as the webhook filters
// them: errors refuse the request, warnings only come back to the client.
func splitFieldError(fe *apis.FieldError) (errs, warns []string) {
	if e := fe.Filter(apis.ErrorLevel); e != nil {
		for _, w := range e.WrappedErrors() {
			errs = append(errs, w.Error())
		}
	}
	if w := fe.Filter(apis.WarningLevel); w != nil {
		for _, x := range w.WrappedErrors() {
			warns = append(warns, x.Error())
		}
	}
	return errs, warns
}

// admitDocument runs admission on one input document and records what it found.
func (c *cluster) admitDocument(d *document) {
	if !isTekton(d.gvk.Group) {
		return
	}
	if d.dupe != nil {
		d.errs.add("strict decoding error: " + d.dupe.Error())
	}
	obj, errs, warns := c.admit(d.gvk, d.raw)
	d.errs.add(errs...)
	for _, w := range warns {
		d.notes = append(d.notes, "admission warning: "+w)
	}
	if obj != nil {
		d.obj = obj
	}
	d.admitted = obj != nil && len(errs) == 0 && d.dupe == nil
}
