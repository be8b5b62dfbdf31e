"""The node: one Kubernetes node and its control plane, inside namespaces of the project's own.

Every process runs in one network namespace (`ip netns`) and one mount namespace the node
creates. The network namespace holds the node's address, the pods' bridge and the Service
rules of kube-proxy: no route leads out of it, so pod and Service traffic never leaves. The
mount namespace holds every mount the kubelet and containerd make (volumes, container root
file systems, pod network namespaces) and covers the few paths they write that cannot be
configured (/var/lib/cni, /var/log/containers, /run/netns) with folders of the node's own: a
stop removes the namespace and all of them with it. The machine itself is never changed: the
kernel settings the kubelet would set for the whole machine (kernel.panic and others) are
shown to it, in its mount namespace only, as already set.

State lives under var/cluster/ (the kubeconfig at var/cluster/kubeconfig); the sockets,
being bounded in length, under /run/<name>/. From this machine the API server answers at the
127.0.0.1 port in the kubeconfig, through a forward (socat) into the network namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from devtools import upstream
from devtools.cluster.pki import Pki

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("CLUSTER_DIR") or REPO / "var" / "cluster")

NODE_NAME = "cqrs-node"
# The node's address, on a veth whose peer is in the same namespace: the default route points
# at GATEWAY, which nothing answers, so a packet for any other address goes nowhere.
NODE_IP = "10.254.0.2"
GATEWAY = "10.254.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"  # the first of SERVICE_CIDR, the `kubernetes` Service
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# The token issuer kind and kubeadm use, so knative/base/auth.yaml's default holds here too.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
APISERVER_PORT = 6443
CNI_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"  # kubeadm's for the pinned release (PauseVersion)

# What the kubelet sets for the whole machine unless it finds it set (container_manager_linux:
# setupKernelTunables); it finds these values in its mount namespace, the machine keeps its own.
KUBELET_KERNEL_SETTINGS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# Paths the kubelet, containerd or the CNI plugins write whatever they are told: each is covered,
# in the node's mount namespace, by a folder of the node's own.
COVERED = ("/var/lib/cni", "/var/log/containers")
# The Debian packages the node needs beyond Python and Go.
PACKAGES = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "socat": "socat",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "nsenter": "util-linux",
    "ip": "iproute2",
}
# Files the node needs that are no command: the CNI plugins, and what runc's build links
# (devtools/upstream.runc: cgo with libseccomp).
PACKAGE_FILES = {
    CNI_PLUGINS / "bridge": "containernetworking-plugins",
    Path("/usr/include/seccomp.h"): "libseccomp-dev",
    Path("/usr/bin/pkg-config"): "pkg-config",
    Path("/usr/bin/gcc"): "gcc",
}

T = TypeVar("T")


class NodeError(RuntimeError):
    pass


def _sh(*argv: str | Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise NodeError(f"{' '.join(str(a) for a in argv)} exited {done.returncode}: {said}")
    return done


def _which(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise NodeError(f"the node needs {name} (Debian package {PACKAGES.get(name, name)})")
    return found


def ensure_packages() -> None:
    """The node's Debian packages, installed with apt when missing (as root)."""
    missing = sorted(
        {pkg for cmd, pkg in PACKAGES.items() if not shutil.which(cmd, path=_PATH)}
        | {pkg for path, pkg in PACKAGE_FILES.items() if not path.exists()}
    )
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise NodeError(
            f"the node needs these Debian packages: apt-get install {' '.join(missing)}"
        )
    print(f"installing {' '.join(missing)} for the node", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _sh("apt-get", "update", "-qq", env=env)
    _sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)


_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


# --- namespaces ---

_CLONE_NEWNET = 0x40000000


def in_netns(netns: Path, fn: Callable[[], T]) -> T:
    """fn() called from a thread that has entered the network namespace: its sockets connect
    from inside (setns changes only the calling thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            with open(netns, "rb") as ns:
                if libc.setns(ns.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name="in-netns", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --- processes ---


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22): with the pid, it
    names one process, never a later one that reused the number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Daemon:
    """A process of the node, detached (it outlives the command that started it) and recorded
    in a pid file with its start time, so a stop signals only that very process."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.name = name
        self.pidfile = layout.run / f"{name}.pid"
        self.log = layout.log / f"{name}.log"

    def pid(self) -> int | None:
        try:
            pid_text, started = self.pidfile.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:  # a zombie (exited, not yet reaped by whoever adopted it) is not alive
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def start(self, argv: Sequence[str | Path], env: dict[str, str] | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            process = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal's Ctrl-C, and it outlives make
                env=env,
            )
        started = None
        for _ in range(50):
            started = _start_time(process.pid)
            if started:
                break
            time.sleep(0.01)
        self.pidfile.write_text(f"{process.pid} {started}\n")

    def stop(self, grace: float = 10.0) -> None:
        pid = self.pid()
        if pid is not None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while self.alive() and time.monotonic() < deadline:
                    _reap()
                    time.sleep(0.1)
                if not self.alive():
                    break
        self.pidfile.unlink(missing_ok=True)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _reap() -> None:
    """Collects our own exited children (started in this process), so they are not zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


# --- layout ---


class Layout:
    """Where everything of one node lives; the names are derived from the state folder, so two
    checkouts can each run a node."""

    def __init__(self, root: Path) -> None:
        self.root = root
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        self.name = f"cqrs-{tag}"
        self.netns = Path("/run/netns") / self.name
        self.sockets = Path("/run") / self.name  # short: a unix socket path has 108 bytes
        self.run = root / "run"
        self.log = root / "log"
        self.pki = root / "pki"
        self.etc = root / "etc"
        self.mountns = self.run / "mnt"
        self.kubeconfig = root / "kubeconfig"
        self.containerd_socket = self.sockets / "containerd.sock"
        # the pods' cgroups, apart from everything else on the machine (KubeletConfiguration)
        self.cgroup_root = f"/{self.name}"


def _cgroup_dirs(layout: Layout) -> list[Path]:
    """The node's cgroups in every v1 hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / layout.cgroup_root.lstrip("/")
        if top.is_dir():
            found += sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            found.append(top)
    return found


# --- the node ---


class Node:
    """One node and its control plane. `up()` starts what is not running (a second call changes
    nothing), `down()` removes all of it."""

    COMPONENTS = (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "containerd",
        "kubelet",
        "kube-proxy",
    )

    def __init__(self, root: Path = STATE) -> None:
        self.layout = Layout(root)
        self.pki = Pki(self.layout.pki)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def daemon(self, name: str) -> Daemon:
        return Daemon(self.layout, name)

    def running(self) -> bool:
        """Every component and the API server's forward are running."""
        names = (*self.COMPONENTS, "forward-apiserver-host", "forward-apiserver-node")
        return self.layout.netns.exists() and all(self.daemon(n).alive() for n in names)

    # --- commands ---

    def inside(self, *argv: str | Path) -> list[str]:
        """argv run in the node's network and mount namespaces."""
        return [
            _which("nsenter"),
            f"--mount={self.layout.mountns}",
            f"--net={self.layout.netns}",
            "--",
            *(str(a) for a in argv),
        ]

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl as the cluster's admin, from this machine."""
        argv = [upstream.kubectl(), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).strip()
            raise NodeError(f"kubectl {' '.join(args)} exited {done.returncode}: {said}")
        return done

    def ctr(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        """containerd's own client, in the namespace the kubelet's images live in."""
        return _sh(
            _which("ctr"), f"--address={self.layout.containerd_socket}", "--namespace=k8s.io",
            *args, **kwargs,
        )  # fmt: skip

    def import_images(self, archive: Path) -> None:
        """Loads a `docker save` (or OCI) archive into the node's containerd."""
        self.ctr("images", "import", "--no-unpack", str(archive), timeout=1200)

    def images(self) -> dict[str, str]:
        """Each image reference the node has (as the kubelet names them, docker.io/library/...),
        and its image ID: its config's digest, the `docker image inspect` Id of what was saved."""
        listed = json.loads(self.crictl("images", "-o", "json").stdout)["images"]
        return {tag: image["id"] for image in listed for tag in image.get("repoTags") or []}

    def crictl(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _sh(
            upstream.crictl(), f"--runtime-endpoint=unix://{self.layout.containerd_socket}",
            "--timeout=30s", *args, check=check, timeout=timeout,
        )  # fmt: skip

    def forward(self, name: str, target_host: str, target_port: int) -> int:
        """A port on this machine's 127.0.0.1 that reaches target_host:target_port inside the
        node's network namespace, through a unix socket between two socat processes (one on
        each side). Returns the port; the same one again while the forward runs."""
        port_file = self.layout.run / f"forward-{name}.port"
        host, node = self.daemon(f"forward-{name}-host"), self.daemon(f"forward-{name}-node")
        if host.alive() and node.alive() and port_file.is_file():
            return int(port_file.read_text())
        host.stop()
        node.stop()
        sock = self.layout.sockets / f"forward-{name}.sock"
        socat = _which("socat")
        node.start(
            self.inside(
                socat, f"UNIX-LISTEN:{sock},fork,unlink-early,mode=600",
                f"TCP:{target_host}:{target_port}",
            )
        )  # fmt: skip
        for attempt in range(5):
            port = _free_port()
            host.start([socat, f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                        f"UNIX-CONNECT:{sock}"])  # fmt: skip
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not _port_open("127.0.0.1", port):
                if not host.alive():
                    break
                time.sleep(0.05)
            if _port_open("127.0.0.1", port):
                port_file.write_text(f"{port}\n")
                return port
            host.stop()
            if attempt == 4:
                raise NodeError(f"the {name} forward did not start:\n{host.tail()}")
        raise AssertionError("unreachable")

    # --- up ---

    def up(self, *, timeout: float = 180.0) -> None:
        """Starts the node (what is not running yet) and waits until it is Ready."""
        ensure_packages()
        binaries = self._binaries()
        layout = self.layout
        for folder in (layout.run, layout.log, layout.etc, layout.sockets):
            folder.mkdir(parents=True, exist_ok=True)
        self._network()
        self._mount_namespace()
        self._certificates()
        self._configs(binaries)
        deadline = time.monotonic() + timeout
        self._start("etcd", self._etcd_argv(binaries["etcd"]))
        self._start("kube-apiserver", self._apiserver_argv(binaries["kube-apiserver"]))
        port = self.forward("apiserver", NODE_IP, APISERVER_PORT)
        self._write_admin_kubeconfig(port)
        self._wait("the API server", self._apiserver_ready, deadline, "kube-apiserver")
        self._start("kube-controller-manager", self._controller_manager_argv(binaries))
        self._start("kube-scheduler", self._scheduler_argv(binaries))
        self._start(
            "containerd", [_which("containerd"), "--config", layout.etc / "containerd.toml"]
        )
        self._wait("containerd", layout.containerd_socket.exists, deadline, "containerd")
        self._cgroups()
        self._start("kubelet", self._kubelet_argv(binaries["kubelet"]))
        self._start(
            "kube-proxy", [binaries["kube-proxy"], f"--config={layout.etc / 'kube-proxy.yaml'}"]
        )
        self._wait("the node to be Ready", self._node_ready, deadline, "kubelet")
        dead = [name for name in self.COMPONENTS if not self.daemon(name).alive()]
        if dead:
            raise NodeError(f"{dead[0]} exited:\n{self.daemon(dead[0]).tail()}")

    def _binaries(self) -> dict[str, Path]:
        found = {name: upstream.kubernetes(name) for name in upstream.KUBERNETES}
        found.update(etcd=upstream.etcd(), runc=upstream.runc(), crictl=upstream.crictl())
        return found

    def _start(self, name: str, argv: Sequence[str | Path]) -> None:
        daemon = self.daemon(name)
        if not daemon.alive():
            daemon.start(self.inside(*argv))

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float, log: str) -> None:
        while not ready():
            dead = [n for n in self.COMPONENTS if self.daemon(n).pidfile.exists()
                    and not self.daemon(n).alive()]  # fmt: skip
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else "timed out"
                name = dead[0] if dead else log
                raise NodeError(
                    f"waiting for {what}: {why}; the last lines of {name}'s log:\n"
                    + self.daemon(name).tail()
                )
            time.sleep(0.5)

    def _apiserver_ready(self) -> bool:
        done = self.kubectl("get", "--raw=/readyz", check=False, timeout=10)
        return done.returncode == 0 and done.stdout.strip() == "ok"

    def _node_ready(self) -> bool:
        done = self.kubectl(
            "get", "node", NODE_NAME, "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False, timeout=10,
        )  # fmt: skip
        return done.stdout.strip() == "True"

    def _network(self) -> None:
        layout = self.layout
        if layout.netns.exists():
            return
        ip = _which("ip")
        _sh(ip, "netns", "add", layout.name)
        try:
            link = ("ip", "-n", layout.name, "link")
            _sh(*link, "add", "eth0", "type", "veth", "peer", "name", "eth1")
            for dev in ("lo", "eth0", "eth1"):
                _sh(*link, "set", dev, "up")
            _sh(ip, "-n", layout.name, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
            _sh(ip, "-n", layout.name, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
            # Per network namespace: routing between the pods' bridge and the node, and the
            # bridge's frames through iptables (kube-proxy's Service rules).
            for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
                _sh(_which("nsenter"), f"--net={layout.netns}", "sysctl", "-qw", f"{key}=1")
        except BaseException:
            _sh(ip, "netns", "delete", layout.name, check=False)
            raise

    def _mount_namespace(self) -> None:
        """A mount namespace kept by a bind mount on layout.mountns, set up once."""
        layout = self.layout
        if _is_mountpoint(layout.mountns):
            return
        layout.mountns.touch()
        _sh(_which("unshare"), f"--mount={layout.mountns}", "--propagation=private", "true")
        covers = layout.root / "covered"
        settings = layout.root / "kernel"
        script = []
        made = layout.run / "made-paths"
        for path in COVERED:
            own = covers / path.strip("/").replace("/", "-")
            own.mkdir(parents=True, exist_ok=True)
            if not Path(path).exists():  # a mount point must exist: made, and removed on stop
                Path(path).mkdir(parents=True)
                with made.open("a") as out:
                    out.write(f"{path}\n")
            script.append(f"mount --bind {own} {path}")
        # /run/netns: a tmpfs, so a pod's network namespace file never lands in the machine's
        script.append("mount -t tmpfs -o mode=755 tmpfs /run/netns")
        settings.mkdir(parents=True, exist_ok=True)
        for key, value in KUBELET_KERNEL_SETTINGS.items():
            if Path(f"/proc/sys/{key}").read_text().strip() == value:
                continue
            shown = settings / key.replace("/", ".")
            shown.write_text(f"{value}\n")
            script.append(f"mount --bind -o ro {shown} /proc/sys/{key}")
        _sh(_which("nsenter"), f"--mount={layout.mountns}", "sh", "-ec", "\n".join(script))

    def _cgroups(self) -> None:
        """The kubelet's cgroup root, in every cgroup v1 hierarchy: the kubelet creates the pods'
        cgroups under it but wants it to exist."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if (
                not (hierarchy / "cgroup.procs").is_file()
                or (hierarchy / "cgroup.controllers").exists()
            ):
                continue  # not a v1 hierarchy (the cgroup2 one has cgroup.controllers)
            top = hierarchy / self.layout.cgroup_root.lstrip("/")
            top.mkdir(exist_ok=True)
            for key in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset has none until given
                if (top / key).is_file() and not (top / key).read_text().strip():
                    (top / key).write_text((hierarchy / key).read_text())

    def _certificates(self) -> None:
        pki = self.pki
        pki.ensure_ca()
        names = (
            "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}", "localhost",
            "IP:127.0.0.1", f"IP:{NODE_IP}", f"IP:{KUBERNETES_SERVICE_IP}",
        )  # fmt: skip
        pki.leaf("apiserver", common_name="kube-apiserver", server_names=names)
        pki.leaf("apiserver-kubelet-client", common_name="kube-apiserver-kubelet-client",
                 groups=["system:masters"])  # fmt: skip
        pki.leaf("admin", common_name="cqrs-admin", groups=["system:masters"])
        pki.leaf("controller-manager", common_name="system:kube-controller-manager")
        pki.leaf("scheduler", common_name="system:kube-scheduler")
        pki.leaf("kubelet", common_name=f"system:node:{NODE_NAME}", groups=["system:nodes"])
        pki.leaf("kubelet-serving", common_name=NODE_NAME,
                 server_names=(NODE_NAME, f"IP:{NODE_IP}"))  # fmt: skip
        pki.leaf("kube-proxy", common_name="system:kube-proxy")
        pki.key_pair("service-account")

    # --- configuration files ---

    def _kubeconfig(self, path: Path, user: str, server: str) -> None:
        def data(name: str) -> str:
            import base64

            return base64.b64encode(self.pki.path(name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cqrs-node",
                    "cluster": {"server": server, "certificate-authority-data": data("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": data(f"{user}.crt"),
                        "client-key-data": data(f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "cqrs-node", "context": {"cluster": "cqrs-node", "user": user}}],
            "current-context": "cqrs-node",
        }
        _write(path, json.dumps(config, indent=2) + "\n", mode=0o600)

    def _write_admin_kubeconfig(self, port: int) -> None:
        self._kubeconfig(self.kubeconfig, "admin", f"https://127.0.0.1:{port}")

    def _configs(self, binaries: dict[str, Path]) -> None:
        layout, pki = self.layout, self.pki
        inside = f"https://{NODE_IP}:{APISERVER_PORT}"
        for user in ("controller-manager", "scheduler", "kubelet", "kube-proxy"):
            self._kubeconfig(layout.etc / f"{user}.kubeconfig", user, inside)
        cni = layout.etc / "cni"
        cni.mkdir(exist_ok=True)
        _write(
            cni / "10-cqrs-pods.conflist",
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "cqrs-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            # nothing to masquerade for: no route leads out of the namespace
                            "ipMasq": False,
                            # a pod reaching itself through its Service
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(layout.root / "cni-ipam"),
                            },
                        }
                    ],
                },
                indent=2,
            )
            + "\n",
        )
        containerd_root = layout.root / "containerd"
        _write(
            layout.etc / "containerd.toml",
            f"""# The node's containerd: all under the node's folders, runc built from its pin.
version = 2
root = "{containerd_root / "root"}"
state = "{layout.sockets / "containerd-state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{containerd_root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine gives no CAP_SYS_RESOURCE: a container may not lower its oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{binaries["runc"]}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_PLUGINS}"
    conf_dir = "{cni}"
""",
        )
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.path("ca.crt"))},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki.path("kubelet-serving.crt")),
            "tlsPrivateKeyFile": str(pki.path("kubelet-serving.key")),
            # This machine has cgroup v1, which the kubelet refuses by default since 1.35.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": layout.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            # No DNS outside the cluster: a pod with dnsPolicy Default gets none.
            "resolvConf": "",
            "podLogsDir": str(layout.log / "pods"),
            "failSwapOn": False,
            "serializeImagePulls": False,
            # A small disk must not evict the shop: only a nearly full one does.
            "evictionHard": {
                "memory.available": "200Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
                "nodefs.inodesFree": "2%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
        }
        _write(layout.etc / "kubelet.yaml", json.dumps(kubelet, indent=2) + "\n")
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(layout.etc / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # the connection-tracking table size is the machine's, not the namespace's: kept
            "conntrack": {"maxPerCore": 0, "min": 0},
            "iptables": {"localhostNodePorts": False},
            "nodePortAddresses": ["primary"],
        }
        _write(layout.etc / "kube-proxy.yaml", json.dumps(proxy, indent=2) + "\n")

    def _etcd_argv(self, etcd: Path) -> list[str | Path]:
        return [
            etcd,
            f"--name={NODE_NAME}",
            f"--data-dir={self.layout.root / 'etcd'}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            f"--initial-cluster={NODE_NAME}=http://127.0.0.1:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            # a throwaway cluster: fsync only slows every write
            "--unsafe-no-fsync",
        ]

    def _apiserver_argv(self, binary: Path) -> list[str | Path]:
        p = self.pki.path
        return [
            binary,
            "--etcd-servers=http://127.0.0.1:2379",
            f"--secure-port={APISERVER_PORT}",
            f"--advertise-address={NODE_IP}",
            f"--tls-cert-file={p('apiserver.crt')}",
            f"--tls-private-key-file={p('apiserver.key')}",
            f"--client-ca-file={p('ca.crt')}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p('service-account.pub')}",
            f"--service-account-signing-key-file={p('service-account.key')}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={p('apiserver-kubelet-client.crt')}",
            f"--kubelet-client-key={p('apiserver-kubelet-client.key')}",
            f"--kubelet-certificate-authority={p('ca.crt')}",
            # else it resolves the node's name through this machine's resolver
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
        ]

    def _controller_manager_argv(self, binaries: dict[str, Path]) -> list[str | Path]:
        p, conf = self.pki.path, self.layout.etc / "controller-manager.kubeconfig"
        return [
            binaries["kube-controller-manager"],
            f"--kubeconfig={conf}",
            f"--authentication-kubeconfig={conf}",
            f"--authorization-kubeconfig={conf}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p('service-account.key')}",
            # the kube-root-ca.crt ConfigMap every namespace gets (projected token volumes)
            f"--root-ca-file={p('ca.crt')}",
            f"--cluster-signing-cert-file={p('ca.crt')}",
            f"--cluster-signing-key-file={p('ca.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
        ]

    def _scheduler_argv(self, binaries: dict[str, Path]) -> list[str | Path]:
        conf = self.layout.etc / "scheduler.kubeconfig"
        return [
            binaries["kube-scheduler"],
            f"--kubeconfig={conf}",
            f"--authentication-kubeconfig={conf}",
            f"--authorization-kubeconfig={conf}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _kubelet_argv(self, kubelet: Path) -> list[str | Path]:
        etc = self.layout.etc
        return [
            kubelet,
            f"--config={etc / 'kubelet.yaml'}",
            f"--kubeconfig={etc / 'kubelet.kubeconfig'}",
            f"--root-dir={self.layout.root / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
        ]

    # --- down ---

    def down(self) -> None:
        """Stops every process of the node and removes its namespaces, mounts, cgroups and
        state. Safe to call when nothing, or only part of it, is running."""
        layout = self.layout
        self.daemon("kubelet").stop()
        if self.daemon("containerd").alive():
            self._remove_pods()
        for name in ("kube-proxy", "kube-scheduler", "kube-controller-manager", "containerd"):
            self.daemon(name).stop()
        self._kill_shims()
        self._kill_cgroups()
        for daemon in layout.run.glob("forward-*.pid"):
            self.daemon(daemon.stem).stop()
        for name in ("kube-apiserver", "etcd"):
            self.daemon(name).stop()
        _reap()
        # The mount namespace goes with its last process and its bind mount.
        if _is_mountpoint(layout.mountns):
            _sh("umount", layout.mountns, check=False)
        # Anything a process mounted in this machine's namespace under our folders (none should).
        for mount in reversed(_mounts_under(layout.root)):
            _sh("umount", "-l", mount, check=False)
        if layout.netns.exists():
            _sh(_which("ip"), "netns", "delete", layout.name, check=False)
        for made in reversed(_read_lines(layout.run / "made-paths")):
            with contextlib.suppress(OSError):  # still empty: nothing else wrote there
                Path(made).rmdir()
        for cgroup in _cgroup_dirs(layout):
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        shutil.rmtree(layout.sockets, ignore_errors=True)
        shutil.rmtree(layout.root, ignore_errors=True)

    def _remove_pods(self) -> None:
        """Every pod sandbox stopped and removed through the CRI: its containers killed, its
        network torn down by the CNI plugins, its network namespace released."""
        self.crictl("rmp", "--all", "--force", check=False)

    def _kill_shims(self) -> None:
        """containerd's shims outlive containerd by design; each wrote its pid in its bundle."""
        for pidfile in self.layout.sockets.glob(
            "containerd-state/io.containerd.runtime.v2.task/*/*/shim.pid"
        ):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)

    def _kill_cgroups(self) -> None:
        """Whatever still runs in the pods' cgroups (a container whose shim was killed)."""
        for _ in range(20):
            pids = {
                int(line)
                for cgroup in _cgroup_dirs(self.layout)
                for line in _read_lines(cgroup / "cgroup.procs")
            }
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Writes only a change: kube-proxy, for one, exits when its configuration file changes."""
    if path.is_file() and path.read_text() == text:
        return
    path.write_text(text)
    path.chmod(mode)


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().split() if line]
    except OSError:
        return []


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return sorted(m for m in mounts if m.startswith(prefix))


def _is_mountpoint(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    return any(
        line.split()[1] == target for line in Path("/proc/self/mounts").read_text().splitlines()
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_node(root: Path = STATE) -> Iterator[Node]:
    node = Node(root)
    node.up()
    try:
        yield node
    finally:
        node.down()
