// CustomResourceDefinitions of projects the shop's manifests use but no validator here imports:
// pinned as modules, read from the module cache by tests/upstream (nothing is built).
module cqrs-shop/tools/upstream/crds

go 1.26

// The PodMonitor of knative/monitoring (example/prometheus-operator-crd).
require github.com/prometheus-operator/prometheus-operator v0.90.1
