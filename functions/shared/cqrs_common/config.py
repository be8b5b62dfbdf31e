"""Settings read once from the environment (or a plain dict in tests).

Wiring has no defaults: a role started without the URL of a role it calls, its K_SINK or its
DATABASE_URL stops at once naming the variable. `make run` (devtools.stack) sets them all from
cqrs_common.roles; in a cluster the manifests do. A default of 127.0.0.1 would have a role in a
pod call itself, and a default SQLite file would keep orders in a container's throwaway disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cqrs_common.roles import ROLES_BY_NAME, Role


class ConfigError(RuntimeError):
    """A setting the role cannot start without is missing or malformed; the message names it."""


# Where Kubernetes mounts a pod's own ServiceAccount token, CA and namespace.
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_JWKS_URL = "https://kubernetes.default.svc/openid/v1/jwks"
# Where the manifests project this role's outbound tokens, one file per audience.
DEFAULT_TOKEN_DIR = "/var/run/secrets/cqrs/tokens"
DEFAULT_LEEWAY = 10.0
_SUBJECT = re.compile(
    r"^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
)


@dataclass(frozen=True)
class AuthSettings:
    mode: str = "off"  # "off" | "jwt"
    issuer: str = ""
    jwks_url: str = DEFAULT_JWKS_URL
    ca_file: str = f"{SA_DIR}/ca.crt"
    api_token_file: str = f"{SA_DIR}/token"
    token_dir: str = DEFAULT_TOKEN_DIR
    namespace: str = ""
    extra_callers: frozenset[str] = field(default_factory=frozenset)
    leeway: float = DEFAULT_LEEWAY

    @property
    def enabled(self) -> bool:
        return self.mode == "jwt"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, namespace_file: str = f"{SA_DIR}/namespace"
    ) -> AuthSettings:
        mode = env.get("CQRS_AUTH", "off").strip().lower() or "off"
        if mode not in {"off", "jwt"}:
            raise ConfigError(f"CQRS_AUTH must be 'off' or 'jwt', not {mode!r}")
        extra = frozenset(
            s.strip() for s in env.get("CQRS_AUTH_EXTRA_CALLERS", "").split(",") if s.strip()
        )
        for s in sorted(extra):
            if not _SUBJECT.match(s):
                raise ConfigError(
                    f"CQRS_AUTH_EXTRA_CALLERS: {s!r} is not "
                    "system:serviceaccount:<namespace>:<name>"
                )
        try:
            leeway = float(env.get("CQRS_AUTH_LEEWAY", DEFAULT_LEEWAY))
        except ValueError:
            raise ConfigError("CQRS_AUTH_LEEWAY must be a number of seconds") from None
        if not 0 <= leeway <= 300:
            raise ConfigError("CQRS_AUTH_LEEWAY must be between 0 and 300 seconds")
        settings = cls(
            mode=mode,
            issuer=env.get("CQRS_AUTH_ISSUER", "").strip(),
            jwks_url=env.get("CQRS_AUTH_JWKS_URL", DEFAULT_JWKS_URL).strip(),
            ca_file=env.get("CQRS_AUTH_CA_FILE", f"{SA_DIR}/ca.crt"),
            api_token_file=env.get("CQRS_AUTH_API_TOKEN_FILE", f"{SA_DIR}/token"),
            token_dir=env.get("CQRS_AUTH_TOKEN_DIR", DEFAULT_TOKEN_DIR),
            namespace=env.get("CQRS_AUTH_NAMESPACE", "").strip(),
            extra_callers=extra,
            leeway=leeway,
        )
        if not settings.enabled:
            return settings
        if not settings.issuer:
            raise ConfigError(
                "CQRS_AUTH_ISSUER is required when CQRS_AUTH=jwt "
                "(kubectl get --raw /.well-known/openid-configuration)"
            )
        if not settings.jwks_url.startswith("https://"):
            raise ConfigError("CQRS_AUTH_JWKS_URL must be an https:// URL")
        if not settings.namespace:
            # only receivers need it (Verifier checks); a sender-only pod may mount no token
            try:
                namespace = Path(namespace_file).read_text(encoding="utf-8").strip()
                settings = replace(settings, namespace=namespace)
            except OSError:
                pass
        return settings


def _required(env: Mapping[str, str], name: str, why: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"set {name}: {why}")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {env[name]!r}") from None


MAX_SINK_BATCH = 100


def _batch_size(env: Mapping[str, str]) -> int:
    value = env.get("SINK_BATCH_SIZE", "1").strip() or "1"
    if not value.isdigit() or not 1 <= int(value) <= MAX_SINK_BATCH:
        raise ConfigError(f"SINK_BATCH_SIZE must be a whole number from 1 to {MAX_SINK_BATCH}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    role: str
    port: int
    sink: str | None = None
    # Base URL of every role this one calls, by role name (cqrs_common.roles: Role.peers).
    peers: Mapping[str, str] = field(default_factory=dict)
    database_url: str = ""
    log_level: str = "INFO"
    # Outbound calls: seconds to connect and to read, and how often to retry a transient failure
    # (at the edge only: the dispatcher; the roles behind it make one try each).
    http_timeout: tuple[float, float] = (2.0, 10.0)
    http_retries: int = 3
    # A request's budget when its caller sends none (cqrs_common.deadline): the Knative
    # Services' timeoutSeconds, after which queue-proxy answers 504 anyway.
    request_timeout: float = 30.0
    # Outbox relay: first retry delay, its ceiling, and how often to look for due rows anyway.
    relay_base_delay: float = 0.5
    relay_max_delay: float = 60.0
    relay_poll_interval: float = 5.0
    relay_enabled: bool = True
    # Calls between roles: tokens checked (cqrs_common.auth) and sent (cqrs_common.tokens);
    # off under make run, where loopback is the boundary.
    auth: AuthSettings = field(default_factory=AuthSettings)
    # The audience of K_SINK's token when it is not the next role's service (a Broker's).
    sink_audience: str | None = None
    # Events per request to K_SINK when several are ready at once (CloudEvents' batched mode):
    # 1 sends each on its own, what a Broker takes; the roles take batches.
    sink_batch_size: int = 1

    def url_of(self, role: Role) -> str:
        return self.peers[role.name]

    @classmethod
    def from_env(cls, role_name: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        role = ROLES_BY_NAME[role_name]
        sink = None
        if role.sink is not None:
            sink = _required(
                env, "K_SINK", f"where {role.name} sends its events ({role.sink}, or a Broker)"
            )
        peers = {}
        for peer_name in role.peers:
            peer = ROLES_BY_NAME[peer_name]
            assert peer.url_env is not None  # roles.py gives every called role one
            peers[peer_name] = _required(
                env, peer.url_env, f"{role.name} calls {peer.name} there"
            ).rstrip("/")
        database_url = ""
        if role.store is not None:
            database_url = _required(
                env, "DATABASE_URL", f"{role.name}'s store (sqlite:///path or postgresql://...)"
            )
        return cls(
            role=role.name,
            port=int(env.get("PORT", role.port)),
            sink=sink,
            peers=peers,
            database_url=database_url,
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            request_timeout=_number(env, "REQUEST_TIMEOUT", 30.0),
            relay_base_delay=_number(env, "RELAY_BASE_DELAY", 0.5),
            relay_max_delay=_number(env, "RELAY_MAX_DELAY", 60.0),
            relay_poll_interval=_number(env, "RELAY_POLL_INTERVAL", 5.0),
            relay_enabled=env.get("RELAY_ENABLED", "1").lower() not in ("0", "false", "no"),
            auth=AuthSettings.from_env(env),
            sink_audience=env.get("K_SINK_AUDIENCE", "").strip() or None,
            sink_batch_size=_batch_size(env),
        )
