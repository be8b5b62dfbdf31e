"""cqrs_common.auth against a real API server: its tokens, its JWKS, its discovery RBAC.

Every token here is minted by kube-apiserver (`kubectl create token`), except the two the
API server will not mint (already expired; another issuer), which are signed with the
server's own signing key. The verifier reads the key set the way a pod does: over https
with the cluster's CA and a ServiceAccount token, which only the default
system:service-account-issuer-discovery binding lets it read.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from cqrs_common import auth, tokens
from cqrs_common.roles import ROLES, ROLES_BY_NAME
from tests.upstream.controlplane import SERVICE_ACCOUNT_ISSUER, ControlPlane

pytestmark = pytest.mark.slow

NS = "cqrs-auth"
ACCOUNTS = [r.service for r in ROLES] + [auth.OPERATOR, auth.OUTBOX_RELAY, "stranger"]


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        plane.kubectl("create", "namespace", NS)
        for account in ACCOUNTS:
            plane.kubectl("create", "serviceaccount", account, "-n", NS)
        yield plane


def mint(cp: ControlPlane, account: str, audience: str, duration: str = "1h") -> str:
    return cp.kubectl(
        "create", "token", account, "-n", NS, "--audience", audience, f"--duration={duration}"
    ).stdout.strip()


@pytest.fixture(scope="module")
def settings(cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> auth.AuthSettings:
    assert cp.dir is not None
    d = tmp_path_factory.mktemp("pod")
    # the pod's own token, audience the API server: what reads the JWKS
    (d / "token").write_text(
        cp.kubectl("create", "token", "cqrs-order-db", "-n", NS).stdout.strip()
    )
    env = {
        "CQRS_AUTH": "jwt",
        "CQRS_AUTH_ISSUER": SERVICE_ACCOUNT_ISSUER,
        "CQRS_AUTH_JWKS_URL": f"{cp.url}/openid/v1/jwks",
        "CQRS_AUTH_CA_FILE": str(cp.dir / "ca.crt"),
        "CQRS_AUTH_API_TOKEN_FILE": str(d / "token"),
        "CQRS_AUTH_NAMESPACE": NS,
    }
    return auth.AuthSettings.from_env(env)


def verifier(settings: auth.AuthSettings, role: str) -> auth.Verifier:
    v = auth.verifier_for(role, ROLES_BY_NAME[role].service, settings)
    assert v is not None
    return v


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refused(v: auth.Verifier, header: str | None, *, write: bool, **kw: float) -> auth.AuthError:
    with pytest.raises(auth.AuthError) as caught:
        v.verify(header, write=write, **kw)
    return caught.value


# --- the topology, with real tokens ---


@pytest.mark.parametrize(
    ("role", "caller", "write"),
    [
        ("command-order", "cqrs-dispatcher", True),
        ("order-db", "cqrs-command-order", True),
        ("order-db", auth.OUTBOX_RELAY, True),
        ("order-db", auth.OPERATOR, True),
        ("order-db", "cqrs-process-data", False),
        ("process-data", "cqrs-order-db", True),
        ("process-data", auth.OPERATOR, True),
        ("stats-order-db", "cqrs-process-data", True),
        ("stats-order-db", "cqrs-query-order", False),
        ("query-order", "cqrs-dispatcher", False),
    ],
)
def test_the_topology_s_callers_are_accepted(
    cp: ControlPlane, settings: auth.AuthSettings, role: str, caller: str, write: bool
) -> None:
    v = verifier(settings, role)
    token = mint(cp, caller, v.audience)
    assert v.verify(bearer(token), write=write) == f"system:serviceaccount:{NS}:{caller}"


@pytest.mark.parametrize(
    ("role", "caller", "write"),
    [
        ("stats-order-db", "cqrs-query-order", True),  # a reader writing
        ("order-db", "cqrs-dispatcher", True),  # skipping command-order
        ("order-db", "cqrs-process-data", True),  # replay reads only
        ("process-data", "cqrs-command-order", True),
        ("stats-order-db", "cqrs-dispatcher", False),  # reads go through query-order
        ("command-order", "stranger", True),
        ("order-db", "cqrs-command-order", False),  # a writer that may not read
    ],
)
def test_a_valid_token_of_a_caller_not_allowed_is_403(
    cp: ControlPlane, settings: auth.AuthSettings, role: str, caller: str, write: bool
) -> None:
    v = verifier(settings, role)
    error = refused(v, bearer(mint(cp, caller, v.audience)), write=write)
    assert error.status == 403
    assert caller in error.detail
    assert error.www_authenticate is None


def test_the_dispatcher_is_public_and_off_means_off(settings: auth.AuthSettings) -> None:
    assert auth.verifier_for("dispatcher", "cqrs-dispatcher", settings) is None
    assert auth.verifier_for("order-db", "cqrs-order-db", auth.AuthSettings()) is None
    assert set(auth.CALLERS) == {r.name for r in ROLES} - {"dispatcher"}
    named = {sa for c in auth.CALLERS.values() for sa in c.writes | c.reads}
    assert named <= set(ACCOUNTS) - {"stranger"}


# --- 401s ---


def test_no_token_is_401_with_a_bare_challenge(settings: auth.AuthSettings) -> None:
    v = verifier(settings, "order-db")
    for header in (None, "", "   "):
        error = refused(v, header, write=True)
        assert error.status == 401
        assert error.www_authenticate == 'Bearer realm="cqrs"'


def test_garbage_and_a_bad_signature_are_401(cp: ControlPlane, settings: auth.AuthSettings) -> None:
    v = verifier(settings, "order-db")
    good = mint(cp, "cqrs-command-order", v.audience)
    head, payload, sig = good.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    # a payload claiming the operator under the command-order's signature
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = f"system:serviceaccount:{NS}:{auth.OPERATOR}"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for header in (
        "Bearer not-a-jwt",
        f"Basic {good}",
        f"Bearer {head}.{payload}.{flipped}",
        f"Bearer {head}.{forged}.{sig}",
    ):
        error = refused(v, header, write=True)
        assert error.status == 401, header
        assert error.www_authenticate is not None
        assert 'error="invalid_token"' in error.www_authenticate
    assert v.verify(bearer(good), write=True)


def test_alg_none_and_hmac_are_refused(cp: ControlPlane, settings: auth.AuthSettings) -> None:
    v = verifier(settings, "order-db")
    kid = jwt.get_unverified_header(mint(cp, "cqrs-command-order", v.audience))["kid"]
    claims = {
        "iss": SERVICE_ACCOUNT_ISSUER,
        "aud": [v.audience],
        "sub": f"system:serviceaccount:{NS}:cqrs-command-order",
        "exp": int(time.time()) + 600,
    }
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    hmac = jwt.encode(
        claims, "a-secret-that-is-public-knowledge-anyway", algorithm="HS256", headers={"kid": kid}
    )
    for token in (unsigned, hmac):
        assert refused(v, bearer(token), write=True).status == 401


def test_a_token_for_another_audience_is_401(cp: ControlPlane, settings: auth.AuthSettings) -> None:
    v = verifier(settings, "order-db")
    # the right caller, but its token is for process-data (or for the API server itself)
    for audience in ("cqrs-process-data", SERVICE_ACCOUNT_ISSUER):
        error = refused(v, bearer(mint(cp, "cqrs-command-order", audience)), write=True)
        assert error.status == 401
        assert "not meant for cqrs-order-db" in error.detail


def test_an_expired_token_is_401(cp: ControlPlane, settings: auth.AuthSettings) -> None:
    v = verifier(settings, "stats-order-db")
    # the API server mints nothing under 10 minutes: check a real token at its end of life
    token = mint(cp, "cqrs-process-data", v.audience, duration="10m")
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert v.verify(bearer(token), write=True, now=exp + settings.leeway - 1)
    error = refused(v, bearer(token), write=True, now=exp + settings.leeway + 1)
    assert (error.status, error.detail) == (401, "token expired")


def sign_as_the_cluster(cp: ControlPlane, kid: str, **claims: object) -> str:
    assert cp.dir is not None
    key = (cp.dir / "service-account.key").read_bytes()
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def test_tokens_the_server_would_not_mint(cp: ControlPlane, settings: auth.AuthSettings) -> None:
    v = verifier(settings, "stats-order-db")
    kid = jwt.get_unverified_header(mint(cp, "cqrs-process-data", v.audience))["kid"]
    now = int(time.time())
    good = {
        "iss": SERVICE_ACCOUNT_ISSUER,
        "aud": [v.audience],
        "sub": f"system:serviceaccount:{NS}:cqrs-process-data",
        "exp": now + 600,
        "nbf": now - 5,
    }
    # signed with the server's key, as the server would: accepted (the check below is fair)
    assert v.verify(bearer(sign_as_the_cluster(cp, kid, **good)), write=True)
    for bad, detail in (
        ({"exp": now - 3600}, "token expired"),
        ({"nbf": now + 3600}, "token not valid yet"),
        ({"iss": "https://issuer.example"}, "token from another issuer"),
    ):
        error = refused(v, bearer(sign_as_the_cluster(cp, kid, **{**good, **bad})), write=True)
        assert (error.status, error.detail) == (401, detail)
    # another cluster's key, under its own kid or under this cluster's
    other = jwt.encode(
        good,
        ec_key_pem(),
        algorithm="ES256",
        headers={"kid": "other-cluster"},
    )
    assert refused(v, bearer(other), write=True).status == 401
    stolen_kid = jwt.encode(good, ec_key_pem(), algorithm="ES256", headers={"kid": kid})
    assert refused(v, bearer(stolen_kid), write=True).detail == "bad signature"


def ec_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- the key set, as a pod reads it ---


def test_the_jwks_is_read_with_the_ca_and_a_service_account_token(
    cp: ControlPlane, settings: auth.AuthSettings, tmp_path: Path
) -> None:
    # the default discovery binding is what lets a ServiceAccount read it
    assert (
        cp.kubectl(
            "get",
            "clusterrolebinding",
            "system:service-account-issuer-discovery",
            "-o",
            "jsonpath={.subjects[0].name}",
        ).stdout
        == "system:serviceaccounts"
    )
    keys = auth.Jwks.from_settings(settings)
    kid = jwt.get_unverified_header(mint(cp, "stranger", "x"))["kid"]
    assert keys.key(kid) is not None
    discovery = json.loads(cp.kubectl("get", "--raw", "/.well-known/openid-configuration").stdout)
    assert discovery["issuer"] == settings.issuer
    # without the token the API server refuses (anonymous may not read it by default) ...
    anonymous = auth.Jwks(settings.jwks_url, ca_file=settings.ca_file, token_file=None)
    with pytest.raises(auth.JwksError, match=r"401|403"):
        anonymous.key(kid)
    # ... and without the cluster's CA the connection is not trusted
    untrusted = auth.Jwks(settings.jwks_url, ca_file=None, token_file=settings.api_token_file)
    with pytest.raises(auth.JwksError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.key(kid)


def test_an_unknown_kid_refetches_at_most_once_per_interval(
    cp: ControlPlane, settings: auth.AuthSettings
) -> None:
    keys = auth.Jwks.from_settings(settings)
    fetches = []
    real = keys._fetch

    def counting() -> dict[str, jwt.PyJWK]:
        fetches.append(1)
        return real()

    keys._fetch = counting  # type: ignore[method-assign]
    for _ in range(20):
        assert keys.key("forged-kid") is None
    assert len(fetches) == 1
    keys.min_refetch = 0
    assert keys.key("forged-kid") is None
    assert len(fetches) == 2


# --- settings and outbound tokens (no server needed) ---


def test_settings_fail_fast_naming_the_variable(tmp_path: Path) -> None:
    assert not auth.AuthSettings.from_env({}).enabled
    base = {"CQRS_AUTH": "jwt", "CQRS_AUTH_NAMESPACE": "cqrs"}
    with pytest.raises(auth.ConfigError, match="CQRS_AUTH_ISSUER"):
        auth.AuthSettings.from_env(base)
    with pytest.raises(auth.ConfigError, match="CQRS_AUTH must be"):
        auth.AuthSettings.from_env({"CQRS_AUTH": "yes"})
    with pytest.raises(auth.ConfigError, match="CQRS_AUTH_EXTRA_CALLERS"):
        auth.AuthSettings.from_env({"CQRS_AUTH_EXTRA_CALLERS": "cqrs-operator"})
    # a sender-only pod (the dispatcher) needs no namespace, CA or API token ...
    sender = auth.AuthSettings.from_env(
        {"CQRS_AUTH": "jwt", "CQRS_AUTH_ISSUER": "https://x"},
        namespace_file=str(tmp_path / "missing"),
    )
    assert sender.enabled and tokens.TokenSource.from_settings(sender).token_dir is not None
    # ... a receiver does
    with pytest.raises(auth.ConfigError, match="CQRS_AUTH_NAMESPACE"):
        auth.Verifier(sender, "cqrs-order-db", auth.CALLERS["order-db"])
    (tmp_path / "namespace").write_text("cqrs\n")
    receiver = auth.AuthSettings.from_env(
        {"CQRS_AUTH": "jwt", "CQRS_AUTH_ISSUER": "https://x", "CQRS_AUTH_CA_FILE": str(tmp_path)},
        namespace_file=str(tmp_path / "namespace"),
    )
    assert receiver.namespace == "cqrs"
    with pytest.raises(auth.ConfigError, match="CQRS_AUTH_CA_FILE"):
        auth.Verifier(receiver, "cqrs-order-db", auth.CALLERS["order-db"])


def test_extra_callers_are_admitted(cp: ControlPlane, settings: auth.AuthSettings) -> None:
    from dataclasses import replace

    trigger = f"system:serviceaccount:{NS}:stranger"
    v = verifier(settings, "order-db")
    token = bearer(mint(cp, "stranger", v.audience))
    assert refused(v, token, write=True).status == 403
    v = verifier(replace(settings, extra_callers=frozenset({trigger})), "order-db")
    assert v.verify(token, write=True) == trigger


def test_token_source_rereads_a_rotated_file(tmp_path: Path) -> None:
    assert tokens.TokenSource.from_settings(auth.AuthSettings()).headers_for("cqrs-order-db") == {}
    source = tokens.TokenSource(tmp_path)
    path = tmp_path / "cqrs-order-db"
    path.write_text("first\n")
    assert source.headers_for("cqrs-order-db") == {"Authorization": "Bearer first"}
    # the kubelet swaps in a new file; same size, later mtime
    path.write_text("secon\n")
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
    assert source.headers_for("cqrs-order-db") == {"Authorization": "Bearer secon"}
    broker = "eventing.knative.dev/broker/cqrs/default"
    (tmp_path / broker).parent.mkdir(parents=True)
    (tmp_path / broker).write_text("b")
    assert source.headers_for(broker) == {"Authorization": "Bearer b"}
    with pytest.raises(FileNotFoundError, match="cqrs-query-order"):
        source.headers_for("cqrs-query-order")
    with pytest.raises(ValueError):
        source.headers_for("../etc/passwd")
