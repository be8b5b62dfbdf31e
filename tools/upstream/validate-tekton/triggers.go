package main

import (
	"fmt"
	"regexp"
	"strings"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	tv1beta1 "github.com/tektoncd/triggers/pkg/apis/triggers/v1beta1"
	"github.com/tektoncd/triggers/pkg/template"
)

var notLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// placeholder stands in for a param an event would bind: its default, else a lower-case
// form of its name, which fits wherever a name, label or plain string is expected.
func placeholder(p tv1beta1.ParamSpec) string {
	if p.Default != nil {
		return *p.Default
	}
	v := strings.Trim(notLabel.ReplaceAllString(strings.ToLower(p.Name), "-"), "-")
	if v == "" {
		v = "x"
	}
	return v
}

// checkTriggerTemplate renders each resource template as the EventListener does for an
// event (template.ResolveResources: $(tt.params.x) and $(uid) substituted) and checks the
// result as its own kind: admission, then, for a run, the reconciler's checks.
func (c *cluster) checkTriggerTemplate(tt *tv1beta1.TriggerTemplate) findings {
	var f findings
	params := make([]tv1beta1.Param, 0, len(tt.Spec.Params))
	for _, p := range tt.Spec.Params {
		params = append(params, tv1beta1.Param{Name: p.Name, Value: placeholder(p)})
	}
	ctx := c.reconcilerContext()
	for i, raw := range template.ResolveResources(tt, params) {
		d, err := parseDocument(raw)
		if err != nil || d == nil {
			f.errorf("resourcetemplates[%d]: the rendered resource is not an object: %v", i, err)
			continue
		}
		where := fmt.Sprintf("resourcetemplates[%d] %s %s", i, d.Kind, d.Name)
		if !isTekton(d.gvk.Group) {
			f.skipf("%s: not a Tekton resource, not checked", where)
			continue
		}
		obj, errs, warns := c.admit(d.gvk, d.raw)
		for _, e := range errs {
			f.errorf("%s: refused at admission: %s", where, e)
		}
		for _, w := range warns {
			f.notes = append(f.notes, fmt.Sprintf("%s: admission warning: %s", where, w))
		}
		if obj == nil || len(errs) > 0 {
			continue
		}
		var sub findings
		switch o := toV1(ctx, obj).(type) {
		case *v1.PipelineRun:
			// The EventListener creates it in its own namespace when it names none.
			if o.Namespace == "" {
				o.Namespace = tt.Namespace
			}
			sub = c.checkPipelineRun(ctx, o)
		case *v1.TaskRun:
			if o.Namespace == "" {
				o.Namespace = tt.Namespace
			}
			sub = c.checkTaskRun(ctx, o)
		}
		for _, e := range sub.errs {
			f.errorf("%s: %s", where, e)
		}
		for _, n := range sub.notes {
			f.notes = append(f.notes, fmt.Sprintf("%s: %s", where, n))
		}
	}
	return f
}
