// Added to github.com/abbot/go-http-auth v0.4.0: the two functions Traefik's basic and digest
// auth middlewares call from containous/go-http-auth, the fork its go.mod replaces it with, which
// the module proxy this project builds from does not serve. Both reuse v0.4.0's own code.

package auth

import (
	"net/http"
	"strings"
)

// CheckSecret says whether password matches an htpasswd secret, choosing the comparison by the
// secret's prefix as v0.4.0's BasicAuth.CheckAuth does (MD5-crypt when no prefix matches).
func CheckSecret(password, secret string) bool {
	compare := compareFuncs[0].compare
	for _, candidate := range compareFuncs[1:] {
		if strings.HasPrefix(secret, candidate.prefix) {
			compare = candidate.compare
			break
		}
	}
	return compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale answers a request whose nonce has expired. The fork adds stale=true to the
// challenge so that a client retries without asking its user again; this one sends a fresh
// challenge without it, which is still correct, only less convenient.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	a.RequireAuth(w, r)
}
