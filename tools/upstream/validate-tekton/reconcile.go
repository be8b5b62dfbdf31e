package main

// What only shows once objects meet on a cluster: the PipelineRun reconciler checks a run
// against its Pipeline and the Pipeline's Tasks before it creates any TaskRun, and the
// TaskRun reconciler checks each TaskRun against its Task. These call the reconcilers'
// own exported check functions (pkg/reconciler/pipelinerun/resources, pkg/reconciler/taskrun,
// pkg/workspace) in the order the reconcilers do, over the objects in the input.

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	pconfig "github.com/tektoncd/pipeline/pkg/apis/config"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	pv1beta1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1beta1"
	"github.com/tektoncd/pipeline/pkg/reconciler/pipeline/dag"
	"github.com/tektoncd/pipeline/pkg/reconciler/pipelinerun/pipelinespec"
	"github.com/tektoncd/pipeline/pkg/reconciler/pipelinerun/resources"
	"github.com/tektoncd/pipeline/pkg/reconciler/taskrun"
	trresources "github.com/tektoncd/pipeline/pkg/reconciler/taskrun/resources"
	"github.com/tektoncd/pipeline/pkg/trustedresources"
	"github.com/tektoncd/pipeline/pkg/workspace"
	tv1beta1 "github.com/tektoncd/triggers/pkg/apis/triggers/v1beta1"
	corev1 "k8s.io/api/core/v1"
	kerrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"knative.dev/pkg/apis"
)

// findings collects errors (what a cluster would fail) and notes (what could not be
// checked offline, reported as skipped).
type findings struct {
	errs  []string
	notes []string
}

func (f *findings) errorf(format string, a ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, a...))
}
func (f *findings) skipf(format string, a ...any) {
	f.notes = append(f.notes, "skip: "+fmt.Sprintf(format, a...))
}

// check records err under the reason the reconciler would set on the run's condition.
func (f *findings) check(reason fmt.Stringer, err error) bool {
	if err != nil {
		f.errorf("%s: %v", reason, err)
		return false
	}
	return true
}

// inventory holds the input's Pipelines and Tasks, which a reconciler would read from the
// cluster for a reference by name.
type inventory struct {
	pipelines []named[*v1.Pipeline]
	tasks     []named[*v1.Task]
}

type named[T any] struct {
	doc *document
	obj T
}

// find prefers an object in the same namespace; an object or a reference without one
// matches any, as kubectl would apply it to the current namespace.
func find[T metav1.Object](list []named[T], namespace, name string) (T, *document) {
	var zero T
	var loose *named[T]
	for i := range list {
		o := list[i].obj
		if o.GetName() != name {
			continue
		}
		if o.GetNamespace() == namespace {
			return o, list[i].doc
		}
		if (namespace == "" || o.GetNamespace() == "") && loose == nil {
			loose = &list[i]
		}
	}
	if loose != nil {
		return loose.obj, loose.doc
	}
	return zero, nil
}

// toV1 gives the v1 form of a v1beta1 Pipelines object, as the API server serves it to
// the reconcilers through the conversion webhook.
func toV1(ctx context.Context, obj any) any {
	var to apis.Convertible
	var from apis.Convertible
	switch o := obj.(type) {
	case *pv1beta1.Pipeline:
		from, to = o, &v1.Pipeline{}
	case *pv1beta1.Task:
		from, to = o, &v1.Task{}
	case *pv1beta1.PipelineRun:
		from, to = o, &v1.PipelineRun{}
	case *pv1beta1.TaskRun:
		from, to = o, &v1.TaskRun{}
	default:
		return obj
	}
	if err := from.ConvertTo(ctx, to); err != nil {
		return obj
	}
	return to
}

func (c *cluster) crossCheck(docs []*document) {
	ctx := c.reconcilerContext()
	for _, d := range docs {
		if d.obj == nil {
			continue
		}
		d.obj = toV1(ctx, d.obj)
		switch o := d.obj.(type) {
		case *v1.Pipeline:
			c.inv.pipelines = append(c.inv.pipelines, named[*v1.Pipeline]{d, o})
		case *v1.Task:
			c.inv.tasks = append(c.inv.tasks, named[*v1.Task]{d, o})
		}
	}
	for _, d := range docs {
		if !d.admitted {
			continue // refused at admission: a cluster never gets this far with it
		}
		var f findings
		switch o := d.obj.(type) {
		case *v1.Pipeline:
			f = c.checkPipeline(ctx, o)
		case *v1.PipelineRun:
			f = c.checkPipelineRun(ctx, o)
		case *v1.TaskRun:
			f = c.checkTaskRun(ctx, o)
		case *tv1beta1.TriggerTemplate:
			f = c.checkTriggerTemplate(o)
		}
		d.errs.add(f.errs...)
		d.notes = append(d.notes, f.notes...)
	}
}

// notFound is what a lister answers for an object that does not exist yet: a run being
// checked has no TaskRuns, CustomRuns or child PipelineRuns.
func notFound(name string) error {
	return kerrors.NewNotFound(schema.GroupResource{Group: "tekton.dev", Resource: "runs"}, name)
}

// resolveTasks resolves every pipeline task the way the PipelineRun reconciler does
// (resolvePipelineState → resources.ResolvePipelineTask), with Tasks from the input.
// A task that can't be resolved offline gets a stand-in marked as a custom task, which the
// result-reference checks pass over, since nothing is known of its results. forRun says
// whether a referenced Task that was refused at admission fails the run (it does) or is
// only noted (for a Pipeline on its own).
func (c *cluster) resolveTasks(ctx context.Context, pr *v1.PipelineRun, spec *v1.PipelineSpec, forRun bool, f *findings) resources.PipelineRunState {
	tasks := append(append([]v1.PipelineTask{}, spec.Tasks...), spec.Finally...)
	var state resources.PipelineRunState
	for _, pt := range tasks {
		standIn := func() {
			pt := pt
			state = append(state, &resources.ResolvedPipelineTask{PipelineTask: &pt, CustomTask: true})
		}
		var task *v1.Task
		switch {
		case pt.PipelineRef != nil || pt.PipelineSpec != nil:
			f.skipf("pipeline task %q runs a child Pipeline: not checked", pt.Name)
			standIn()
			continue
		case pt.TaskRef != nil && pt.TaskRef.IsCustomTask(), pt.TaskSpec != nil && pt.TaskSpec.IsCustomTask():
			// ResolvePipelineTask marks it a custom task itself; nothing to fetch.
		case pt.TaskRef != nil && pt.TaskRef.Resolver != "":
			f.skipf("pipeline task %q: taskRef resolver %q is remote, not resolved offline (its params, workspaces and results are not checked)", pt.Name, pt.TaskRef.Resolver)
			standIn()
			continue
		case pt.TaskRef != nil:
			t, td := find(c.inv.tasks, pr.Namespace, pt.TaskRef.Name)
			if td == nil {
				f.skipf("pipeline task %q: Task %q is not in the input (it may exist on the cluster)", pt.Name, pt.TaskRef.Name)
				standIn()
				continue
			}
			if !td.admitted {
				if forRun {
					f.errorf("%s: pipeline task %q: Task %q (%s) is refused at admission, so the cluster has no such Task", v1.PipelineRunReasonCouldntGetTask, pt.Name, pt.TaskRef.Name, td.label())
				} else {
					f.skipf("pipeline task %q: Task %q (%s) is refused at admission; see its own errors", pt.Name, pt.TaskRef.Name, td.label())
				}
				standIn()
				continue
			}
			task = t
		}
		getTask := func(context.Context, string) (*v1.Task, *v1.RefSource, *trustedresources.VerificationResult, error) {
			if task == nil {
				return nil, nil, nil, notFound(pt.Name)
			}
			return task.DeepCopy(), nil, nil, nil
		}
		getPipeline := func(_ context.Context, name string) (*v1.Pipeline, *v1.RefSource, *trustedresources.VerificationResult, error) {
			return nil, nil, nil, notFound(name)
		}
		getPipelineRun := func(name string) (*v1.PipelineRun, error) { return nil, notFound(name) }
		getTaskRun := func(name string) (*v1.TaskRun, error) { return nil, notFound(name) }
		getRun := func(name string) (*pv1beta1.CustomRun, error) { return nil, notFound(name) }
		rpt, err := resources.ResolvePipelineTask(ctx, *pr, getPipelineRun, getPipeline, getTask, getTaskRun, getRun, pt, state)
		if err != nil {
			f.check(v1.PipelineRunReasonFailedValidation, fmt.Errorf("pipeline task %q: couldn't resolve all references: %w", pt.Name, err))
			standIn()
			continue
		}
		state = append(state, rpt)
	}
	return state
}

// checkResolved runs the reconciler's checks on resolved tasks (pipelinerun.go, reconcile):
// each task's params against its Task, enum subsets, result references, optional
// workspaces, and the matrix's param types. originals are the tasks before parameter
// substitution, aligned with state.
func checkResolved(ctx context.Context, spec *v1.PipelineSpec, originals []v1.PipelineTask, state resources.PipelineRunState, f *findings) {
	cfg := pconfig.FromContextOrDefaults(ctx)
	for i, rpt := range state {
		if rpt.IsCustomTask() || rpt.IsChildPipeline() || rpt.ResolvedTask == nil {
			continue
		}
		f.check(v1.PipelineRunReasonFailedValidation, taskrun.ValidateResolvedTask(ctx, rpt.PipelineTask.Params, rpt.PipelineTask.Matrix, rpt.ResolvedTask))
		if cfg.FeatureFlags.EnableParamEnum {
			f.check(v1.PipelineRunReasonFailedValidation, resources.ValidateParamEnumSubset(originals[i].Params, spec.Params, rpt.ResolvedTask))
		}
	}
	f.check(v1.PipelineRunReasonInvalidTaskResultReference, resources.ValidatePipelineTaskResults(state))
	f.check(v1.PipelineRunReasonInvalidPipelineResultReference, resources.ValidatePipelineResults(spec, state))
	f.check(v1.PipelineRunReasonRequiredWorkspaceMarkedOptional, resources.ValidateOptionalWorkspaces(spec.Workspaces, state))
	f.check(v1.PipelineRunReasonInvalidMatrixParameterTypes, resources.ValidateParameterTypesInMatrix(state))
}

// checkPipeline checks a Pipeline's tasks against the Tasks in the input without a run:
// what every run of it would fail on. Its workspaces are bound as if every pipeline
// workspace were given, since only a run says which are.
func (c *cluster) checkPipeline(ctx context.Context, p *v1.Pipeline) findings {
	var f findings
	spec := p.Spec.DeepCopy()
	spec.SetDefaults(ctx)
	pr := &v1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: p.Name + "-run", Namespace: p.Namespace}}
	state := c.resolveTasks(ctx, pr, spec, false, &f)
	checkResolved(ctx, spec, append(append([]v1.PipelineTask{}, spec.Tasks...), spec.Finally...), state, &f)
	for _, rpt := range state {
		if rpt.IsCustomTask() || rpt.ResolvedTask == nil || rpt.ResolvedTask.TaskSpec == nil {
			continue
		}
		var binds []v1.WorkspaceBinding
		for _, ws := range rpt.PipelineTask.Workspaces {
			binds = append(binds, v1.WorkspaceBinding{Name: ws.Name, EmptyDir: &corev1.EmptyDirVolumeSource{}})
		}
		decls := workspaceDeclarations(rpt.ResolvedTask.TaskName == "", rpt.ResolvedTask.TaskSpec, binds)
		if err := workspace.ValidateBindings(ctx, decls, binds); err != nil {
			f.errorf("%s: pipeline task %q: %v", v1.TaskRunReasonFailedValidation, rpt.PipelineTask.Name, err)
		}
	}
	return f
}

// checkPipelineRun follows the PipelineRun reconciler (pipelinerun.go, reconcile) up to
// the creation of the first TaskRuns, then checks those TaskRuns as admission and the
// TaskRun reconciler would.
func (c *cluster) checkPipelineRun(ctx context.Context, in *v1.PipelineRun) findings {
	var f findings
	pr := in.DeepCopy()
	if pr.Name == "" {
		pr.Name = generateName(pr.GenerateName)
	}
	pr.SetDefaults(ctx)

	ref := pr.Spec.PipelineRef
	var pipeline *v1.Pipeline
	switch {
	case ref != nil && ref.Resolver != "":
		f.skipf("pipelineRef resolver %q is remote, not resolved offline: the run is not checked against its Pipeline", ref.Resolver)
		return f
	case ref != nil && ref.Name != "":
		p, pd := find(c.inv.pipelines, pr.Namespace, ref.Name)
		if pd == nil {
			f.skipf("Pipeline %q is not in the input (it may exist on the cluster): the run is not checked against it", ref.Name)
			return f
		}
		if !pd.admitted {
			f.errorf("%s: Pipeline %q (%s) is refused at admission, so the cluster has no such Pipeline", v1.PipelineRunReasonCouldntGetPipeline, ref.Name, pd.label())
			return f
		}
		pipeline = p
	}
	getPipeline := func(context.Context, string) (*v1.Pipeline, *v1.RefSource, *trustedresources.VerificationResult, error) {
		return pipeline.DeepCopy(), nil, nil, nil
	}
	meta, spec, err := pipelinespec.GetPipelineData(ctx, pr, getPipeline)
	if !f.check(v1.PipelineRunReasonCouldntGetPipeline, err) {
		return f
	}

	if _, err := dag.Build(v1.PipelineTaskList(spec.Tasks), v1.PipelineTaskList(spec.Tasks).Deps()); !f.check(v1.PipelineRunReasonInvalidGraph, err) {
		return f
	}
	if _, err := dag.Build(v1.PipelineTaskList(spec.Finally), map[string][]string{}); !f.check(v1.PipelineRunReasonInvalidGraph, err) {
		return f
	}
	if errs, _ := splitFieldError(spec.Validate(ctx)); len(errs) > 0 {
		for _, e := range errs {
			f.errorf("%s: Pipeline %s can't be Run; it has an invalid spec: %s", v1.PipelineRunReasonFailedValidation, meta.Name, e)
		}
		return f
	}

	// The reconciler stops at the first of these; all are reported, as each is independent.
	cfg := pconfig.FromContextOrDefaults(ctx)
	f.check(v1.PipelineRunReasonParameterMissing, resources.ValidateRequiredParametersProvided(&spec.Params, &pr.Spec.Params))
	f.check(v1.PipelineRunReasonParameterTypeMismatch, resources.ValidateParamTypesMatching(spec, pr))
	if cfg.FeatureFlags.EnableParamEnum {
		f.check(v1.PipelineRunReasonInvalidParamValue, taskrun.ValidateEnumParam(ctx, pr.Spec.Params, spec.Params))
	}
	f.check(v1.PipelineRunReasonObjectParameterMissKeys, resources.ValidateObjectParamRequiredKeys(spec.Params, pr.Spec.Params))
	f.check(v1.PipelineRunReasonParamArrayIndexingInvalid, resources.ValidateParamArrayIndex(spec, pr.Spec.Params))
	f.check(v1.PipelineRunReasonInvalidWorkspaceBinding, resources.ValidateWorkspaceBindings(spec, pr))
	f.check(v1.PipelineRunReasonInvalidTaskRunSpec, resources.ValidateTaskRunSpecs(spec, pr))
	if len(f.errs) > 0 {
		return f // substitution below assumes these hold
	}

	resources.ApplyParametersToWorkspaceBindings(pr)
	original := spec.DeepCopy()
	originals := append(append([]v1.PipelineTask{}, original.Tasks...), original.Finally...)
	spec, err = resources.ApplyParameters(spec, pr)
	if !f.check(v1.PipelineRunReasonFailedValidation, err) {
		return f
	}
	spec = resources.ApplyContexts(spec, meta.Name, pr)
	spec = resources.ApplyWorkspaces(spec, pr)
	// validatePipelineSpecAfterApplyParameters: onError may only be known after substitution.
	for _, t := range append(append([]v1.PipelineTask{}, spec.Tasks...), spec.Finally...) {
		if errs, _ := splitFieldError(t.ValidateOnError(ctx)); len(errs) > 0 {
			for _, e := range errs {
				f.errorf("%s: Pipeline %s can't be Run; it has an invalid spec: %s", v1.PipelineRunReasonFailedValidation, meta.Name, e)
			}
		}
	}

	state := c.resolveTasks(ctx, pr, spec, true, &f)
	checkResolved(ctx, spec, originals, state, &f)
	if len(f.errs) > 0 {
		return f
	}
	for _, rpt := range state {
		c.checkChildTaskRuns(ctx, pr, rpt, &f)
	}
	return f
}

// checkChildTaskRuns builds the TaskRuns the reconciler would create for one pipeline task
// (createTaskRun: one per matrix combination) and checks each as admission and the TaskRun
// reconciler would. Result references stay unresolved here: their values exist only once
// the tasks before have run, and the checks below let such references through.
func (c *cluster) checkChildTaskRuns(ctx context.Context, pr *v1.PipelineRun, rpt *resources.ResolvedPipelineTask, f *findings) {
	if rpt.IsCustomTask() || rpt.IsChildPipeline() || rpt.ResolvedTask == nil || rpt.ResolvedTask.TaskSpec == nil {
		return
	}
	pt := rpt.PipelineTask
	combos := []v1.Params{nil}
	if pt.IsMatrixed() {
		combos = pt.Matrix.FanOut()
	}
	names := resources.GetNamesOfTaskRuns(nil, pt.Name, pr.Name, len(combos))
	trSpec := pr.GetTaskRunSpec(pt.Name)
	wsBindings, err := taskRunWorkspaces(pr, rpt)
	if err != nil {
		f.errorf("%s: pipeline task %q: %v", v1.PipelineRunReasonFailedValidation, pt.Name, err)
		return
	}
	for i, combo := range combos {
		tr := &v1.TaskRun{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1.SchemeGroupVersion.String(), Kind: "TaskRun"},
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Namespace: pr.Namespace},
			Spec: v1.TaskRunSpec{
				Retries:            pt.Retries,
				Params:             append(append(v1.Params{}, combo...), pt.Params...),
				ServiceAccountName: trSpec.ServiceAccountName,
				PodTemplate:        trSpec.PodTemplate,
				StepSpecs:          trSpec.StepSpecs,
				SidecarSpecs:       trSpec.SidecarSpecs,
				ComputeResources:   trSpec.ComputeResources,
				Timeout:            pt.Timeout,
				Workspaces:         wsBindings,
			},
		}
		if trSpec.Timeout != nil {
			tr.Spec.Timeout = trSpec.Timeout
		}
		if rpt.ResolvedTask.TaskName != "" {
			tr.Spec.TaskRef = pt.TaskRef
		} else {
			tr.Spec.TaskSpec = rpt.ResolvedTask.TaskSpec
		}
		// Named by pipeline task, not TaskRun, so that a matrix reports a mistake once.
		where := fmt.Sprintf("TaskRun for pipeline task %q", pt.Name)
		raw, err := json.Marshal(tr)
		if err != nil {
			f.errorf("%s: %v", where, err)
			continue
		}
		if _, errs, _ := c.admit(v1.SchemeGroupVersion.WithKind("TaskRun"), raw); len(errs) > 0 {
			for _, e := range errs {
				f.errorf("%s: %s: refused at admission: %s", v1.PipelineRunReasonCreateRunFailed, where, e)
			}
			continue
		}
		var tf findings
		prepareTaskRun(ctx, tr, rpt.ResolvedTask, &tf)
		for _, e := range tf.errs {
			f.errorf("%s: %s", where, e)
		}
	}
}

// taskRunWorkspaces binds a pipeline task's workspaces as getTaskrunWorkspaces does: the
// run's binding of the pipeline workspace under the task's name, a volumeClaimTemplate
// turned into the claim the reconciler creates for the run.
func taskRunWorkspaces(pr *v1.PipelineRun, rpt *resources.ResolvedPipelineTask) ([]v1.WorkspaceBinding, error) {
	byName := map[string]v1.WorkspaceBinding{}
	for _, b := range pr.Spec.Workspaces {
		byName[b.Name] = b
	}
	var out []v1.WorkspaceBinding
	for _, ws := range rpt.PipelineTask.Workspaces {
		pipelineWorkspace := ws.Workspace
		if pipelineWorkspace == "" {
			pipelineWorkspace = ws.Name
		}
		b, ok := byName[pipelineWorkspace]
		if !ok {
			optional := false
			for _, d := range rpt.ResolvedTask.TaskSpec.Workspaces {
				if d.Name == ws.Name && d.Optional {
					optional = true
				}
			}
			if !optional {
				return nil, fmt.Errorf("expected workspace %q to be provided by pipelinerun for pipeline task %q", pipelineWorkspace, rpt.PipelineTask.Name)
			}
			continue
		}
		binding := *b.DeepCopy()
		binding.Name = ws.Name
		if b.SubPath != "" && ws.SubPath != "" {
			binding.SubPath = filepath.Join(b.SubPath, ws.SubPath)
		} else if ws.SubPath != "" {
			binding.SubPath = ws.SubPath
		}
		if binding.VolumeClaimTemplate != nil {
			binding.VolumeClaimTemplate = nil
			binding.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pipelineWorkspace + "-" + pr.Name}
		}
		out = append(out, binding)
	}
	return out, nil
}

// workspaceDeclarations is what the TaskRun reconciler checks bindings against: an
// embedded spec also accepts whatever is bound to it (propagated workspaces).
func workspaceDeclarations(embedded bool, ts *v1.TaskSpec, binds []v1.WorkspaceBinding) []v1.WorkspaceDeclaration {
	if !embedded {
		return ts.Workspaces
	}
	var decls []v1.WorkspaceDeclaration
	for _, b := range binds {
		decls = append(decls, v1.WorkspaceDeclaration{Name: b.Name})
	}
	return append(decls, ts.Workspaces...)
}

// prepareTaskRun runs the TaskRun reconciler's checks (taskrun.go, prepare) that need no
// cluster: params against the Task, enums, array indexes, workspace bindings, and the
// one-claim rule of the default affinity assistant.
func prepareTaskRun(ctx context.Context, tr *v1.TaskRun, rt *trresources.ResolvedTask, f *findings) {
	cfg := pconfig.FromContextOrDefaults(ctx)
	f.check(v1.TaskRunReasonFailedValidation, taskrun.ValidateResolvedTask(ctx, tr.Spec.Params, &v1.Matrix{}, rt))
	if cfg.FeatureFlags.EnableParamEnum {
		f.check(v1.TaskRunReasonInvalidParamValue, taskrun.ValidateEnumParam(ctx, tr.Spec.Params, rt.TaskSpec.Params))
	}
	f.check(v1.TaskRunReasonFailedValidation, trresources.ValidateParamArrayIndex(rt.TaskSpec, tr.Spec.Params))
	decls := workspaceDeclarations(tr.Spec.TaskSpec != nil, rt.TaskSpec, tr.Spec.Workspaces)
	f.check(v1.TaskRunReasonFailedValidation, workspace.ValidateBindings(ctx, decls, tr.Spec.Workspaces))
	// affinityassistant.GetAffinityAssistantBehavior is internal upstream; this is its
	// per-workspace case, the default coschedule.
	if cfg.FeatureFlags.Coschedule == pconfig.CoscheduleWorkspaces {
		f.check(v1.TaskRunReasonFailedValidation, workspace.ValidateOnlyOnePVCIsUsed(tr.Spec.Workspaces))
	}
}

// checkTaskRun checks a TaskRun from the input against its Task, as the TaskRun
// reconciler would.
func (c *cluster) checkTaskRun(ctx context.Context, in *v1.TaskRun) findings {
	var f findings
	tr := in.DeepCopy()
	tr.SetDefaults(ctx)
	rt := &trresources.ResolvedTask{Kind: trresources.GetTaskKind(tr)}
	switch {
	case tr.Spec.TaskSpec != nil:
		rt.TaskSpec = tr.Spec.TaskSpec.DeepCopy()
	case tr.Spec.TaskRef != nil && tr.Spec.TaskRef.IsCustomTask():
		return f
	case tr.Spec.TaskRef != nil && tr.Spec.TaskRef.Resolver != "":
		f.skipf("taskRef resolver %q is remote, not resolved offline: the run is not checked against its Task", tr.Spec.TaskRef.Resolver)
		return f
	case tr.Spec.TaskRef != nil:
		t, td := find(c.inv.tasks, tr.Namespace, tr.Spec.TaskRef.Name)
		if td == nil {
			f.skipf("Task %q is not in the input (it may exist on the cluster): the run is not checked against it", tr.Spec.TaskRef.Name)
			return f
		}
		if !td.admitted {
			f.errorf("%s: Task %q (%s) is refused at admission, so the cluster has no such Task", v1.TaskRunReasonFailedValidation, tr.Spec.TaskRef.Name, td.label())
			return f
		}
		rt.TaskName, rt.TaskSpec = t.Name, t.Spec.DeepCopy()
	default:
		return f
	}
	rt.TaskSpec.SetDefaults(ctx)
	prepareTaskRun(ctx, tr, rt, &f)
	return f
}
