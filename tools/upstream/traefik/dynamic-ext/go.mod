// A stand-in for github.com/traefik/traefik/dynamic/ext, a module inside Traefik's repository
// that is published nowhere: Traefik's go.mod points at it with a replace to its own folder,
// which Go ignores in a dependency (traefik/traefik issue 13115). Its open-source content is two
// empty extension points of the dynamic configuration, which is all this declares.
module github.com/traefik/traefik/dynamic/ext

go 1.24.0
