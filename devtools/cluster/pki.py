"""The node's certificates: one CA, and a certificate per component, made with openssl.

As kubeadm lays them out: the API server's serving certificate for every name and address it is
reached at, a client certificate per identity (its CN the user, its O the group), the kubelet's
own serving certificate, and the key pair service-account tokens are signed with.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_DAYS = "30"


class Pki:
    def __init__(self, folder: Path) -> None:
        self.dir = folder

    def path(self, name: str) -> Path:
        return self.dir / name

    def ensure_ca(self) -> None:
        """The CA, made once: every certificate and kubeconfig trusts it."""
        if self.path("ca.crt").is_file():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # Our own minimal openssl config: the system's may add extensions that clash with ours.
        self.path("openssl.cnf").write_text("[req]\ndistinguished_name = dn\n[dn]\n")
        self._openssl(
            "req", "-x509", "-new", *_EC, "-config", "openssl.cnf", "-days", _DAYS,
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=cqrs-node-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def leaf(
        self,
        name: str,
        *,
        common_name: str,
        groups: Sequence[str] = (),
        server_names: Sequence[str] = (),
    ) -> None:
        """<name>.crt and <name>.key signed by the CA: a client certificate for CN/O, or a
        serving one when `server_names` (DNS names and IP:addresses) are given."""
        if self.path(f"{name}.crt").is_file():
            return
        subject = "".join(f"/O={group}" for group in groups) + f"/CN={common_name}"
        extensions = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
        if server_names:
            alt = ",".join(n if n.startswith("IP:") else f"DNS:{n}" for n in server_names)
            extensions += ["extendedKeyUsage=serverAuth", f"subjectAltName={alt}"]
        else:
            extensions.append("extendedKeyUsage=clientAuth")
        self.path(f"{name}.ext").write_text("\n".join(extensions) + "\n")
        self._openssl(
            "req", "-new", *_EC, "-config", "openssl.cnf", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-CAserial", "ca.srl", "-days", _DAYS,
            "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip

    def key_pair(self, name: str) -> None:
        """<name>.key and <name>.pub: the service-account token signing key."""
        if self.path(f"{name}.key").is_file():
            return
        self._openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", f"{name}.key",
        )  # fmt: skip
        self._openssl("pkey", "-in", f"{name}.key", "-pubout", "-out", f"{name}.pub")

    def _openssl(self, *args: str) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            raise RuntimeError("the node's certificates need the openssl command")
        done = subprocess.run([openssl, *args], cwd=self.dir, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")
