// Files that replace or add files of Traefik's dependencies at build time (gobuild.build_patched;
// devtools/cluster/knative.py says which goes where). Their own module keeps them out of the
// pins module's packages: nothing builds this folder by itself.
module cqrs-shop/tools/upstream/traefik/patches

go 1.26.0
