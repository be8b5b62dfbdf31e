"""The project's own single-node Kubernetes cluster, for the live tests and by hand.

    make cluster-up     # python -m devtools.cluster up
    make cluster-down   # python -m devtools.cluster down

Everything is built here from pinned sources (the Go module proxy, Debian's packages) and runs
inside a network namespace the project creates; state lives under var/cluster/ and a stop
removes it with every process, mount and namespace.

- node.py: the node: network namespace, containerd, etcd, kube-apiserver, controller-manager,
  scheduler, kubelet, kube-proxy, CoreDNS; kubectl against it.
- images.py: the images the node runs, built with a private dockerd and loaded into containerd.
- knative.py: Knative Serving and its ingress (Traefik's KIngress provider) from the pinned
  modules.
"""
