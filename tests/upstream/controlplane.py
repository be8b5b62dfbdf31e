"""A real Kubernetes API server for tests: etcd + kube-apiserver, as controller-runtime's envtest.

Both are built from pinned Go modules (devtools/upstream.py) on first use and cached. No kubelet, no
controller-manager, no scheduler: objects are stored, validated, admitted and authorized for
real, but nothing reconciles them (pods never run, a deleted namespace stays Terminating).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from devtools import upstream

# What the API server issues service-account tokens as, and accepts by default.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Only an allocation range for ClusterIPs stored in etcd: nothing is ever routed to it.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"


def free_port() -> int:
    # Another process may take it before ours binds: start-up retries on "address already in use".
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL the child when we die, even by SIGKILL, so a
    killed pytest leaves no server behind. The signal follows the *thread* that started the
    child: start the control plane from a thread that lives as long as it should (pytest's)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing may be loaded after fork
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return preexec


def _tail(path: Path, lines: int = 50) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


_DIR_PREFIX = "cqrs-controlplane-"


def _remove_orphaned_dirs() -> None:
    """Removes the directories of control planes whose test run was killed (SIGKILL leaves no
    chance to clean up; the kernel killed the servers themselves, see _die_with_parent)."""
    for found in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            os.kill(int((found / "owner").read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(found, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge: another user's, or being created right now


class StartupError(RuntimeError):
    pass


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message includes what kubectl said."""

    def __str__(self) -> str:
        said = (self.stderr or self.output or "").strip()
        # Without the kubeconfig and cache flags that every call has.
        args = [
            arg for arg in self.cmd[1:] if not arg.startswith(("--kubeconfig=", "--cache-dir="))
        ]
        return f"kubectl {' '.join(args)} exited {self.returncode}: {said}"


class _Process:
    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            # Its own process group (session), so stop() reaches anything it forks, and
            # a Ctrl-C at the terminal reaches only pytest, which then stops us in order.
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )

    def stop(self, grace: float = 10.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


class ControlPlane:
    """etcd + kube-apiserver on loopback, on free ports, in a temporary directory.

    with ControlPlane() as cp:
        cp.kubectl("get", "ns")

    The admin (client certificate in group system:masters) is in `kubeconfig`; authorization is
    RBAC, service-account tokens (TokenRequest, TokenReview) work with SERVICE_ACCOUNT_ISSUER
    as issuer and default audience.
    """

    kubeconfig: Path
    url: str

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.dir: Path | None = None
        self._processes: list[_Process] = []

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- start and stop ---

    def start(self) -> ControlPlane:
        # Building takes minutes the first time, so it stays outside the start-up bound.
        etcd, apiserver = upstream.etcd(), upstream.kubernetes("kube-apiserver")
        _remove_orphaned_dirs()
        self.dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        (self.dir / "owner").write_text(f"{os.getpid()}\n")
        try:
            self._make_certs()
            deadline = time.monotonic() + self.startup_timeout
            etcd_url = self._retry_on_port_clash(lambda: self._start_etcd(etcd, deadline))
            self.url = self._retry_on_port_clash(
                lambda: self._start_apiserver(apiserver, etcd_url, deadline)
            )
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops both servers (the API server first) and removes their data. Idempotent."""
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log_tail(self, name: str, lines: int = 50) -> str:
        """The last lines of the log of "etcd" or "kube-apiserver" (while running)."""
        assert self.dir is not None, "not started"
        return _tail(self.dir / f"{name}.log", lines)

    # --- kubectl ---

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        as_user: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl as the admin, or impersonating `as_user` (e.g. system:serviceaccount:ns:sa)."""
        assert self.dir is not None, "not started"
        argv = [
            upstream.kubectl(),
            f"--kubeconfig={self.kubeconfig}",
            # Its discovery cache, per control plane: never stale from an earlier server.
            f"--cache-dir={self.dir / 'kubectl-cache'}",
        ]
        if as_user:
            argv.append(f"--as={as_user}")
        argv.extend(args)
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, argv, done.stdout, done.stderr)
        return done

    def install_crds(self, paths: Sequence[Path], timeout: float = 60.0) -> list[str]:
        """Applies the CRDs (and anything else) in `paths` and waits until each CRD is
        Established, that is served. Returns the CRDs' names."""
        files = [arg for path in paths for arg in ("-f", str(path))]
        # Server-side: a big CRD exceeds the 256 KiB last-applied annotation of client-side apply.
        applied = self.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=cqrs-tests",
            "-o", "name", *files,
        )  # fmt: skip
        crds = [
            line.split("/", 1)[1]
            for line in applied.stdout.split()
            if line.startswith("customresourcedefinition.")
        ]
        if crds:
            self.kubectl(
                "wait", "--for=condition=Established", f"--timeout={timeout:.0f}s",
                *(f"customresourcedefinition/{name}" for name in crds),
            )  # fmt: skip
        return crds

    # --- the parts of start() ---

    def _make_certs(self) -> None:
        """A CA; the API server's serving cert; the admin's client cert; the SA signing key."""
        assert self.dir is not None
        # Our own minimal openssl config: the system's may add extensions that clash with ours.
        (self.dir / "openssl.cnf").write_text("[req]\ndistinguished_name = dn\n[dn]\n")
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        common = ("-config", "openssl.cnf", "-days", "7")
        self._openssl(
            "req", "-x509", "-new", *ec, *common, "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=cqrs-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        leaves = {
            "serving": ("/CN=kube-apiserver", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
            "admin": ("/O=system:masters/CN=cqrs-admin", "clientAuth", None),
        }
        for name, (subject, usage, alt_names) in leaves.items():
            extensions = [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature",
                f"extendedKeyUsage={usage}",
            ]
            if alt_names:
                extensions.append(f"subjectAltName={alt_names}")
            (self.dir / f"{name}.ext").write_text("\n".join(extensions) + "\n")
            self._openssl(
                "req", "-new", *ec, "-config", "openssl.cnf", "-subj", subject,
                "-keyout", f"{name}.key", "-out", f"{name}.csr",
            )  # fmt: skip
            self._openssl(
                "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-CAserial", "ca.srl", "-days", "7",
                "-extfile", f"{name}.ext", "-out", f"{name}.crt",
            )  # fmt: skip
        self._openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", "service-account.key",
        )  # fmt: skip
        self._openssl(
            "pkey", "-in", "service-account.key", "-pubout", "-out", "service-account.pub"
        )

    def _openssl(self, *args: str) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            raise StartupError("the control plane's certificates need the openssl command")
        done = subprocess.run([openssl, *args], cwd=self.dir, capture_output=True, text=True)
        if done.returncode != 0:
            raise StartupError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")

    def _retry_on_port_clash(self, start: Callable[[], str]) -> str:
        # free_port() only finds a port free *now*; three tries make a clash all but impossible.
        for attempt in range(3):
            try:
                return start()
            except StartupError as error:
                if attempt == 2 or "address already in use" not in str(error):
                    raise
                self._processes.pop().stop()
        raise AssertionError("unreachable")

    def _launch(
        self, name: str, argv: Sequence[str], ready: Callable[[], bool], deadline: float
    ) -> None:
        assert self.dir is not None
        process = _Process(name, argv, self.dir / f"{name}.log")
        self._processes.append(process)
        while not ready():
            code = process.popen.poll()
            if code is not None:
                why = f"exited with {code}"
            elif time.monotonic() > deadline:
                why = f"was not ready within {self.startup_timeout:.0f} s"
            else:
                time.sleep(0.2)
                continue
            # The log itself goes with the temporary directory: its tail goes into the error.
            message = f"{name} {why}; the last lines of its log:\n{_tail(process.log)}"
            for earlier in self._processes[:-1]:
                if earlier.popen.poll() is not None:  # e.g. etcd died under the API server
                    message += f"\n{earlier.name} has exited too:\n{_tail(earlier.log)}"
            raise StartupError(message)

    def _start_etcd(self, binary: Path, deadline: float) -> str:
        assert self.dir is not None
        client = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        # Plain HTTP on loopback, as envtest: only the API server talks to it.
        argv = [
            str(binary),
            "--name=cqrs-test",
            f"--data-dir={self.dir / 'etcd-data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=cqrs-test={peer}",
            # Throwaway data: fsync would only slow every write down.
            "--unsafe-no-fsync",
        ]
        self._launch("etcd", argv, lambda: _etcd_healthy(client), deadline)
        return client

    def _start_apiserver(self, binary: Path, etcd_url: str, deadline: float) -> str:
        assert self.dir is not None
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        d = self.dir
        argv = [
            str(binary),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # Given, so that it never looks for a network interface; and with no Endpoints for
            # the `kubernetes` Service, nothing ever points at it.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={d / 'serving.crt'}",
            f"--tls-private-key-file={d / 'serving.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={d / 'service-account.pub'}",
            f"--service-account-signing-key-file={d / 'service-account.key'}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        ]
        context = self._admin_ssl_context()
        self._launch("kube-apiserver", argv, lambda: _apiserver_ready(url, context), deadline)
        return url

    def _admin_ssl_context(self) -> ssl.SSLContext:
        assert self.dir is not None
        context = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        context.load_cert_chain(self.dir / "admin.crt", self.dir / "admin.key")
        return context

    def _write_kubeconfig(self) -> None:
        assert self.dir is not None
        d = self.dir

        def data(name: str) -> str:
            return base64.b64encode((d / name).read_bytes()).decode()

        # JSON is YAML; the certificates inline, so the file stands on its own.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cqrs-test",
                    "cluster": {"server": self.url, "certificate-authority-data": data("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "cqrs-admin",
                    "user": {
                        "client-certificate-data": data("admin.crt"),
                        "client-key-data": data("admin.key"),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "cqrs-test",
                    "context": {"cluster": "cqrs-test", "user": "cqrs-admin"},
                }
            ],
            "current-context": "cqrs-test",
        }
        self.kubeconfig = self.dir / "kubeconfig"
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")


# Loopback only: never through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _etcd_healthy(url: str) -> bool:
    try:
        with _opener.open(f"{url}/health", timeout=2) as response:
            return json.load(response).get("health") == "true"
    except (OSError, ValueError):
        return False


def _apiserver_ready(url: str, context: ssl.SSLContext) -> bool:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False
