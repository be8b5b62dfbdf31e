"""Fetching the cluster's token keys (cqrs_common.auth.Jwks) from loopback servers: the bearer
goes nowhere but the configured URL, and keys in hand outlive an API server that is away."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cqrs_common.auth import Jwks, JwksError

KID = "k1"


def _jwks() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    return json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()


class KeyServer:
    """Answers GET with `answer` (status, headers, body), after `delay` s; records each request's
    Authorization header."""

    def __init__(self) -> None:
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, _jwks())
        self.delay = 0.0
        self.seen: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append(self.headers.get("Authorization"))
                time.sleep(server.delay)
                status, headers, body = server.answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/openid/v1/jwks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[KeyServer, KeyServer]]:
    api, elsewhere = KeyServer(), KeyServer()
    yield api, elsewhere
    api.stop()
    elsewhere.stop()


@pytest.fixture
def token(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text("the-pods-token\n")
    return str(path)


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(
    servers: tuple[KeyServer, KeyServer], token: str
) -> None:
    api, elsewhere = servers
    api.answer = (302, {"Location": elsewhere.url}, b"")
    jwks = Jwks(api.url, ca_file=None, token_file=token)
    with pytest.raises(JwksError):
        jwks.key(KID)
    assert api.seen == ["Bearer the-pods-token"]
    assert elsewhere.seen == []


def test_keys_in_hand_are_used_while_the_api_server_stalls_with_one_fetch_in_flight(
    servers: tuple[KeyServer, KeyServer], token: str
) -> None:
    api, _ = servers
    jwks = Jwks(api.url, ca_file=None, token_file=token, max_age=0.2, timeout=1.0)
    first = jwks.key(KID)
    assert first is not None
    time.sleep(0.3)  # the keys are now older than max_age: the next look-up refetches
    api.delay = 3.0  # and the API server does not answer within the timeout
    found: list[object] = []
    threads = [threading.Thread(target=lambda: found.append(jwks.key(KID))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [first] * 8  # every request verified with the cached key
    assert len(api.seen) == 2  # the first fetch, then one refetch, not one per request
    jwks.key(KID)
    assert len(api.seen) == 2  # backing off after the failed refetch


def test_without_keys_a_failing_fetch_is_an_error_then_retried_after_a_backoff(
    servers: tuple[KeyServer, KeyServer], token: str
) -> None:
    api, _ = servers
    api.answer = (500, {}, b"down")
    jwks = Jwks(api.url, ca_file=None, token_file=token, min_refetch=0.3)
    for _ in range(3):
        with pytest.raises(JwksError):
            jwks.key(KID)
    assert len(api.seen) == 1  # the two after it did not wait on the API server again
    api.answer = (200, {}, _jwks())
    time.sleep(0.35)
    assert jwks.key(KID) is not None and len(api.seen) == 2
