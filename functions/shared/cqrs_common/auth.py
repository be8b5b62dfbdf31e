"""Who may call a role: audience-bound ServiceAccount tokens, checked against the cluster's JWKS.

In a cluster every call between roles, and every event delivered to one, carries a
Kubernetes ServiceAccount token whose audience is the receiving Knative Service. The
receiver checks it here and admits only the callers the topology gives it (CALLERS).
The mesh cannot do this alone: Knative's activator forwards any caller under its own
identity, so the sender's identity has to travel with the request.

Imported only when CQRS_AUTH=jwt (make run leaves it off: loopback is the boundary), so
PyJWT and cryptography never slow a local start.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

# JOSE verification (algorithm confusion, "alg": "none", key parsing, constant-time
# signature checks) is exactly what not to write by hand: PyJWT with cryptography.
import jwt
import urllib3

from cqrs_common.config import AuthSettings, ConfigError
from cqrs_common.roles import OPERATOR, OUTBOX_RELAY, ROLES

__all__ = ["OPERATOR", "OUTBOX_RELAY", "AuthError", "AuthSettings", "Callers", "Jwks",
           "JwksError", "Verifier", "verifier_for"]  # fmt: skip

logger = logging.getLogger(__name__)

REALM = "cqrs"
# Probes (kubelet through queue-proxy, Knative's activator at /healthz) and the metrics
# scrape carry no token and change nothing.
UNVERIFIED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READ_METHODS = frozenset({"GET", "HEAD"})
# Tokens whose signature was checked, kept so the next request with one costs no RSA/ECDSA.
VERIFIED_CACHE = 1024


@dataclass(frozen=True)
class Callers:
    """The ServiceAccount names that may write to (any method but GET/HEAD) and read from a role."""

    writes: frozenset[str] = frozenset()
    reads: frozenset[str] = frozenset()


# Who may call whom: cqrs_common.roles (Role.writers, Role.readers), by ServiceAccount name.
# Eventing's OIDC identities (Trigger and PingSource deliveries) are per overlay and come
# from CQRS_AUTH_EXTRA_CALLERS. The dispatcher is public: it has no entry, nothing is verified.
CALLERS: Mapping[str, Callers] = {
    role.name: Callers(frozenset(role.writers), frozenset(role.readers))
    for role in ROLES
    if not role.public
}


def is_write(method: str) -> bool:
    return method.upper() not in READ_METHODS


def subject(namespace: str, service_account: str) -> str:
    """The `sub` of a ServiceAccount's token."""
    return f"system:serviceaccount:{namespace}:{service_account}"


class AuthError(Exception):
    """A request refused: 401 (no usable token) or 403 (a valid token, a caller not allowed)."""

    def __init__(self, status: int, detail: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.www_authenticate: str | None = None
        if status == 401:
            # RFC 6750 section 3: no error code when the request carried no token at all
            value = f'Bearer realm="{REALM}"'
            if error:
                safe = detail.replace("\\", "").replace('"', "'")
                value += f', error="{error}", error_description="{safe}"'
            self.www_authenticate = value


class JwksError(Exception):
    """The key set could not be read: the receiver's problem, not the caller's (answer 503)."""


@dataclass
class Jwks:
    """The cluster's signing keys, fetched over https and cached by key id.

    The API server serves them to every ServiceAccount (the default
    system:service-account-issuer-discovery binding), so the pod reads them with its own token;
    anonymous callers are refused by default. The token goes to the configured URL only: a
    redirect is an error, never followed (it could lead anywhere, plain http included).
    An unknown `kid` (the API server got a new key) triggers a refetch, at most once every
    `min_refetch` seconds so a flood of forged kids cannot hammer the API server. One fetch is
    in flight at a time; while it runs, and while refetches fail (retried with a backoff
    doubling from `min_refetch` up to `max_backoff`), the keys in hand are used: a key set an
    hour old still verifies while the API server is away, with no request waiting on it.
    """

    url: str
    _: KW_ONLY
    ca_file: str | None
    token_file: str | None
    min_refetch: float = 10.0  # seconds between two fetches for an unknown kid, at least
    max_age: float = 3600.0  # a key set older than this is read again
    max_backoff: float = 300.0
    timeout: float = 5.0
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict, init=False, repr=False)
    _fetched_at: float | None = field(default=None, init=False, repr=False)
    _retry_at: float = field(default=0.0, init=False, repr=False)  # no fetch before (backoff)
    _failures: int = field(default=0, init=False, repr=False)
    _error: JwksError | None = field(default=None, init=False, repr=False)
    _fetching: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Jwks:
        return cls(settings.jwks_url, ca_file=settings.ca_file, token_file=settings.api_token_file)

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key with that id, or None when the key set does not have it, even after a
        refetch; JwksError when no key set could be read yet."""
        # With keys in hand nobody waits for another's fetch; without, all wait for one.
        if self._wants_fetch(kid) and self._fetching.acquire(blocking=not self._keys):
            try:
                if self._wants_fetch(kid):  # not done meanwhile by the one waited for
                    self._refresh()
            finally:
                self._fetching.release()
        if not self._keys and self._error is not None:
            raise self._error
        keys = self._keys
        return keys.get(kid) if kid is not None else _only(keys)

    def _wants_fetch(self, kid: str | None) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        if self._fetched_at is None:
            return True
        age = now - self._fetched_at
        return age > self.max_age or (kid not in self._keys and age >= self.min_refetch)

    def _refresh(self) -> None:
        try:
            keys = self._fetch()
        except JwksError as exc:
            self._failures += 1
            backoff = min(self.max_backoff, self.min_refetch * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + backoff
            self._error = exc
            if self._keys:
                logger.warning("%s; using the keys fetched before, for %.0f s more", exc, backoff)
            return
        self._keys, self._fetched_at = keys, time.monotonic()
        self._failures, self._retry_at, self._error = 0, 0.0, None

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        # the API server serves it as application/jwk-set+json and answers 406 to json alone
        headers = {"Accept": "application/jwk-set+json, application/json"}
        if self.token_file:
            # re-read on every fetch: the kubelet rotates the pod's token
            try:
                token = Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise JwksError(f"cannot read the token to fetch the JWKS: {exc}") from None
            headers["Authorization"] = f"Bearer {token}"
        # No proxy (the API server is inside the cluster), no redirect, no retry of its own.
        tls = {"ca_certs": self.ca_file} if self.url.startswith("https://") else {}
        pool = urllib3.PoolManager(retries=False, **tls)
        try:
            answer = pool.request(
                "GET", self.url, headers=headers, redirect=False, retries=False,
                timeout=self.timeout, preload_content=False,
            )  # fmt: skip
            try:
                if answer.status != 200:
                    raise JwksError(f"cannot fetch the JWKS from {self.url}: {answer.status}")
                document = json.loads(answer.read(1 << 20))
            finally:
                answer.release_conn()
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (urllib3.exceptions.HTTPError, OSError, ValueError, jwt.PyJWTError) as exc:
            raise JwksError(f"cannot fetch the JWKS from {self.url}: {exc}") from None
        finally:
            pool.clear()
        return {k.key_id: k for k in keys if k.key_id}


def _only(keys: Mapping[str, jwt.PyJWK]) -> jwt.PyJWK | None:
    # a token without kid is accepted only when the key set has exactly one key
    return next(iter(keys.values())) if len(keys) == 1 else None


class Verifier:
    """Checks the bearer token of a request to one role: signed by the cluster, for this
    audience, in time, from a caller the topology allows for that kind of request."""

    def __init__(
        self, settings: AuthSettings, audience: str, callers: Callers, *, jwks: Jwks | None = None
    ) -> None:
        if not settings.enabled:
            raise ConfigError("Verifier needs CQRS_AUTH=jwt")
        # fail at startup, naming the variable, rather than refuse every request later
        if not settings.namespace:
            raise ConfigError(
                "CQRS_AUTH_NAMESPACE is not set and the pod's namespace file is missing"
            )
        if jwks is None:
            for name, path in (
                ("CQRS_AUTH_CA_FILE", settings.ca_file),
                ("CQRS_AUTH_API_TOKEN_FILE", settings.api_token_file),
            ):
                if not os.path.isfile(path):
                    raise ConfigError(f"{name}: no file at {path}")
        self.settings = settings
        self.audience = audience
        self.jwks = jwks or Jwks.from_settings(settings)
        ns = settings.namespace
        self.writers = frozenset(subject(ns, sa) for sa in callers.writes) | settings.extra_callers
        self.readers = frozenset(subject(ns, sa) for sa in callers.reads) | settings.extra_callers
        self._verified: dict[str, dict[str, Any]] = {}

    def verify(
        self, authorization_header: str | None, *, write: bool, now: float | None = None
    ) -> str:
        """The caller's subject (system:serviceaccount:<ns>:<name>); raises AuthError."""
        claims = self._claims(_bearer_token(authorization_header))
        self._check_time(claims, time.time() if now is None else now)
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise AuthError(401, "token without subject")
        if sub not in (self.writers if write else self.readers):
            raise AuthError(
                403, f"{sub} may not {'write to' if write else 'read from'} {self.audience}"
            )
        return sub

    def _claims(self, token: str) -> dict[str, Any]:
        """The claims of a token signed by the cluster for this audience and issuer. A token
        checked once is not checked again (a caller sends the same one for up to an hour):
        its signature cannot change, its expiry is checked on every request. (A key the cluster
        drops stays trusted for the tokens it already signed: an hour at most.)"""
        known = self._verified.get(token)
        if known is not None:
            return known
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "malformed token") from None
        key = self.jwks.key(header.get("kid"))
        if key is None:
            raise AuthError(401, "token not signed by a key of this cluster")
        try:
            claims = jwt.decode(
                token,
                key.key,
                # the cluster's key says the algorithm (RS256/ES256), never the token's header
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.settings.issuer,
                # exp/nbf in _check_time, against `now`; iat says nothing a verifier needs
                options={"require": ["exp", "iss", "aud", "sub"], "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise AuthError(401, _decode_failure(exc, self.audience)) from None
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()  # rare: tokens are renewed hourly, one per caller
        self._verified[token] = claims
        return claims

    def _check_time(self, claims: Mapping[str, Any], now: float) -> None:
        leeway = self.settings.leeway
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or now > exp + leeway:
            raise AuthError(401, "token expired")
        if nbf is not None and (not isinstance(nbf, int | float) or now < nbf - leeway):
            raise AuthError(401, "token not valid yet")


def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header or not authorization_header.strip():
        raise AuthError(401, "no bearer token", error=None)
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "the Authorization header is not 'Bearer <token>'")
    return token


def _decode_failure(exc: jwt.PyJWTError, audience: str) -> str:
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"token not meant for {audience}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token from another issuer"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    return f"invalid token: {exc}"


def verifier_for(
    role_name: str, service: str, settings: AuthSettings, *, jwks: Jwks | None = None
) -> Verifier | None:
    """The role's verifier, or None when verification is off or the role is public."""
    if not settings.enabled or role_name not in CALLERS:
        return None
    return Verifier(settings, service, CALLERS[role_name], jwks=jwks)
