// Package conformance is Knative's own KIngress conformance suite as one test binary: built with
// `go test -c` (devtools/gobuild.py test_binary) and run against a cluster by
// devtools/cluster/knative.py, which passes the flags of knative.dev/networking/test and
// knative.dev/pkg/test (-ingressClass, -skip-tests, -kubeconfig, -dockerrepo, -tag, ...).
package conformance

import (
	"testing"

	"knative.dev/networking/test/conformance/ingress"
)

func TestIngressConformance(t *testing.T) {
	ingress.RunConformance(t)
}
