"""The tokens a role sends: one audience-bound ServiceAccount token per role it calls, projected
by the kubelet into a file per audience (cqrs_common.auth checks them on the other side).

Light on purpose (no JOSE library): every role that calls another imports it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from cqrs_common.config import AuthSettings, Settings
from cqrs_common.roles import ROLES_BY_NAME

Credentials = Callable[[str], dict[str, str]]


class TokenSource:
    """This role's outbound tokens: one file per audience under token_dir, projected and
    rotated by the kubelet (re-read whenever the file changes). token_dir None: off."""

    def __init__(self, token_dir: str | os.PathLike[str] | None) -> None:
        self.token_dir = Path(token_dir) if token_dir is not None else None
        self._cache: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenSource:
        return cls(settings.token_dir if settings.enabled else None)

    def headers_for(self, audience: str) -> dict[str, str]:
        if self.token_dir is None:
            return {}
        rel = PurePosixPath(audience)
        # Eventing's audiences contain slashes (eventing.knative.dev/broker/<ns>/<name>)
        if not audience or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"not an audience: {audience!r}")
        path = self.token_dir / rel
        try:
            st = path.stat()  # follows the kubelet's ..data symlink swap
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            with self._lock:
                cached = self._cache.get(audience)
                if cached is None or cached[0] != stamp:
                    cached = (stamp, path.read_text(encoding="utf-8").strip())
                    self._cache[audience] = cached
        except OSError:
            raise FileNotFoundError(
                f"no token for audience {audience} at {path}: is it in the projected volume?"
            ) from None
        return {"Authorization": f"Bearer {cached[1]}"}


def outbound_credentials(settings: Settings) -> Credentials | None:
    """The Authorization header for a call to a URL: the token for the role at that URL (its
    Knative Service is the audience), or for K_SINK (K_SINK_AUDIENCE, else the next role's
    service); None when tokens are off."""
    if not settings.auth.enabled:
        return None
    source = TokenSource(settings.auth.token_dir)
    audiences = {url: ROLES_BY_NAME[peer].service for peer, url in settings.peers.items()}
    role = ROLES_BY_NAME[settings.role]
    if settings.sink and role.sink:
        audiences[settings.sink] = settings.sink_audience or ROLES_BY_NAME[role.sink].service

    def credentials(url: str) -> dict[str, str]:
        for base, audience in audiences.items():
            if url == base or url.startswith(base.rstrip("/") + "/"):
                return source.headers_for(audience)
        return {}

    return credentials
