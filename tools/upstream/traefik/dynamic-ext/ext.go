// Package ext declares the extension points that github.com/traefik/traefik/v3/pkg/config/dynamic
// embeds in its HTTP configuration and routers; open-source Traefik leaves both empty.
package ext

// HTTP is embedded in dynamic.HTTPConfiguration.
type HTTP struct{}

// Router is embedded in dynamic.Router.
type Router struct{}
