"""The stand-in images (devtools/cluster/images.py) built for real and run the way the node and the
manifests run them: pause as a pod sandbox, PostgreSQL as knative/postgres/single/postgres.yaml
runs it, curl as the outbox relay CronJob runs it, and a ko-style static image.

Needs root (a private dockerd); builds on first use (about a minute with an empty cache, the
rootfs tarballs and layers are then cached under ~/.cache/cqrs-shop). Fails, never skips, when
the engine cannot be set up. Containers get no network, or the host's to reach loopback only
(PostgreSQL is told to listen on 127.0.0.1). Run with `make test-images`.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from cqrs_common.roles import ROLES
from devtools import gobuild
from devtools.cluster import images
from devtools.cluster.images import Builder
from tests.support import json_server, wait_for

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_MANIFEST = ROOT / "knative" / "postgres" / "single" / "postgres.yaml"
RELAY_MANIFEST = ROOT / "knative" / "overlays" / "direct" / "outbox-relay-cronjob.yaml"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"


def test_standin_recipes_are_hadolint_clean() -> None:
    dockerfiles = sorted(images.RECIPES.glob("*/Dockerfile"))
    assert {p.parent.name for p in dockerfiles} >= {"pause", "postgres", "curl"}
    for dockerfile in dockerfiles:
        done = subprocess.run([str(HADOLINT), str(dockerfile)], capture_output=True, text=True)
        assert done.returncode == 0, f"{dockerfile}:\n{done.stdout}{done.stderr}"
    generated = images.static_binary("ko.local/x:v1", Path("/nonexistent"), "/ko-app/x")
    done = subprocess.run(
        [str(HADOLINT), "-"], input=generated.dockerfile, capture_output=True, text=True
    )
    assert done.returncode == 0, f"static_binary's Dockerfile:\n{done.stdout}{done.stderr}"


# --- engine and images (built once per module) -------------------------------------------------


@pytest.fixture(scope="module")
def builder() -> Iterator[Builder]:
    with Builder() as engine:
        yield engine


@pytest.fixture(scope="module")
def standins(builder: Builder) -> list[str]:
    started = time.monotonic()
    recipes = images.stand_ins()
    built = builder.build(recipes)
    first = time.monotonic() - started
    started = time.monotonic()
    again = builder.build(images.stand_ins())
    second = time.monotonic() - started
    print(f"stand-ins: first build {first:.1f}s ({len(built)} built), again {second:.1f}s")
    # unchanged recipes: nothing is built again
    assert again == []
    return [r.ref for r in recipes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(builder: Builder, *args: str, timeout: float = 120) -> str:
    return builder.docker(*args, timeout=timeout).stdout


def inspect(builder: Builder, ref: str) -> dict[str, Any]:
    return json.loads(docker(builder, "inspect", ref))[0]


def logs(builder: Builder, cid: str) -> str:
    done = subprocess.run(
        ["docker", "logs", cid], env=builder.env, capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


def wait_exit(builder: Builder, cid: str, timeout: float = 60) -> int:
    return int(docker(builder, "wait", cid, timeout=timeout).strip())


@pytest.fixture
def containers(builder: Builder) -> Iterator[list[str]]:
    """Ids of the containers a test starts: removed (with their volumes) when it ends."""
    started: list[str] = []
    yield started
    for cid in started:
        subprocess.run(["docker", "rm", "-f", "-v", cid], env=builder.env, capture_output=True)


# --- pause ---------------------------------------------------------------------------------------


@pytest.mark.images
def test_pause_keeps_running_as_65535_and_stops_at_once_on_sigterm(
    builder: Builder, standins: list[str], containers: list[str]
) -> None:
    tag = images.PAUSE.rsplit(":", 1)[1]
    out = docker(builder, "run", "--rm", "--network", "none", images.PAUSE, "-v")
    assert out.strip() == f"pause.c v{tag}"
    assert inspect(builder, images.PAUSE)["Config"]["User"] == "65535:65535"

    cid = docker(
        builder, "run", "-d", "--network", "none", "--read-only", "--cap-drop", "ALL",
        images.PAUSE,
    ).strip()  # fmt: skip
    containers.append(cid)
    time.sleep(3)
    state = inspect(builder, cid)["State"]
    assert state["Running"], state
    # PID 1 ignores a signal it has no handler for: docker stop would wait 10 s, then kill (137)
    started = time.monotonic()
    docker(builder, "stop", "--time", "10", cid, timeout=60)
    stopped_in = time.monotonic() - started
    assert inspect(builder, cid)["State"]["ExitCode"] == 0
    assert stopped_in < 5, f"pause took {stopped_in:.1f}s to stop"
    assert "Shutting down, got signal" in logs(builder, cid)


# --- a ko-style static image ---------------------------------------------------------------------

PROBE = """\
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/user"
)

func main() {
	u, err := user.Current()
	if err != nil {
		fmt.Println("user:", err)
		os.Exit(1)
	}
	bundle, err := os.ReadFile(os.Getenv("SSL_CERT_FILE"))
	if err != nil {
		fmt.Println("bundle:", err)
		os.Exit(1)
	}
	certs := 0
	for block, rest := pem.Decode(bundle); block != nil; block, rest = pem.Decode(rest) {
		if _, err := x509.ParseCertificate(block.Bytes); err == nil {
			certs++
		}
	}
	tmp := os.WriteFile("/tmp/probe", []byte("x"), 0o600) == nil
	home := os.WriteFile(u.HomeDir+"/probe", []byte("x"), 0o600) == nil
	fmt.Printf("uid=%d gid=%d name=%s home=%s certs=%d tmp=%t home_writable=%t ko=%s path=%s\\n",
		os.Getuid(), os.Getgid(), u.Username, u.HomeDir, certs, tmp, home,
		os.Getenv("KO_DATA_PATH"), os.Getenv("PATH"))
}
"""


@pytest.mark.images
def test_static_binary_runs_as_65532_with_passwd_certs_and_a_writable_tmp(
    builder: Builder, standins: list[str], tmp_path: Path
) -> None:
    module = tmp_path / "probe"
    module.mkdir()
    (module / "go.mod").write_text("module probe\n\ngo 1.21\n")
    (module / "main.go").write_text(PROBE)
    binary = gobuild.build(module, ".", "standin-probe", cgo=False)
    ref = "ko.local/cqrs-shop/standin-probe:test"
    image = images.static_binary(ref, binary, "/ko-app/probe")
    builder.build([image])  # built, or up to date from an earlier run
    assert builder.build([image]) == [], "an unchanged image is built again"

    out = docker(builder, "run", "--rm", "--network", "none", "--cap-drop", "ALL", ref).strip()
    fields = dict(item.split("=", 1) for item in out.split())
    assert fields["uid"] == fields["gid"] == "65532", out
    assert (fields["name"], fields["home"]) == ("nonroot", "/home/nonroot"), out
    assert int(fields["certs"]) > 100, out  # Debian's bundle holds about 140
    assert fields["tmp"] == fields["home_writable"] == "true", out
    assert fields["ko"] == "/var/run/ko", out
    assert fields["path"].split(":")[-1] == "/ko-app", out
    config = inspect(builder, ref)["Config"]
    # numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/ko-app/probe"] and not config["Cmd"]


# --- PostgreSQL as knative/postgres/single/postgres.yaml runs it --------------------------------


def postgres_manifest() -> dict[str, Any]:
    docs = list(yaml.safe_load_all(POSTGRES_MANIFEST.read_text()))
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (init,) = [d for d in docs if d["kind"] == "ConfigMap"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return {
        "image": container["image"],
        "pod": pod["securityContext"],
        "container": container["securityContext"],
        "env": {k: v for k, v in env.items() if v is not None},
        "probe": container["readinessProbe"]["exec"]["command"],
        "data": mounts[claim["metadata"]["name"]],
        "init": mounts[next(n for n, v in volumes.items() if "configMap" in v)],
        "run": mounts[next(n for n, v in volumes.items() if "emptyDir" in v)],
        "init_files": init["data"],
    }


class Postgres:
    """Starts the stand-in as the manifest's pod would: its user, group and fsGroup, no
    capabilities, the data volume, an emptyDir for the socket, the init ConfigMap read-only.
    The host network is shared, so the server listens on loopback only, on a free port."""

    def __init__(self, builder: Builder, containers: list[str], tmp_path: Path) -> None:
        self.builder, self.containers = builder, containers
        self.m = postgres_manifest()
        self.password = "pw-" + secrets.token_hex(8)
        self.port = free_port()
        self.data = tmp_path / "data"  # the volume: group fsGroup, setgid, as the kubelet makes it
        self.data.mkdir()
        shutil.chown(self.data, 0, self.m["pod"]["fsGroup"])
        self.data.chmod(0o2775)
        self.init = tmp_path / "init"
        self.init.mkdir(mode=0o755)
        self.init.chmod(0o755)
        for name, text in self.m["init_files"].items():
            (self.init / name).write_text(text)
        self.init_files = sorted(self.m["init_files"])

    def start(self, *, password: bool = True) -> str:
        pod, env = self.m["pod"], dict(self.m["env"])
        if password:
            env["POSTGRES_PASSWORD"] = self.password
        args = [
            "run", "-d", "--network", "host",
            "--user", f"{pod['runAsUser']}:{pod['runAsGroup']}", "--group-add", str(pod["fsGroup"]),
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-v", f"{self.data}:{self.m['data']}",
            "-v", f"{self.init}:{self.m['init']}:ro",
            "--tmpfs", f"{self.m['run']}:mode=1777",
            *(f"--env={k}={v}" for k, v in sorted(env.items())),
            f"--env=PGPORT={self.port}",
            self.m["image"], "-c", "listen_addresses=127.0.0.1",
        ]  # fmt: skip
        cid = docker(self.builder, *args).strip()
        self.containers.append(cid)
        return cid

    def url(self, password: str | None = None, db: str | None = None) -> str:
        user = self.m["env"]["POSTGRES_USER"]
        db = db or self.m["env"]["POSTGRES_DB"]
        return f"postgresql://{user}:{password or self.password}@127.0.0.1:{self.port}/{db}"

    def wait_ready(self, cid: str, timeout: float = 180) -> None:
        """The manifest's probe passes and a TCP login works (the probe passes during init)."""

        def ready() -> bool:
            state = inspect(self.builder, cid)["State"]
            if not state["Running"]:
                raise AssertionError(
                    f"postgres exited {state['ExitCode']}:\n{logs(self.builder, cid)}"
                )
            probe = subprocess.run(
                ["docker", "exec", cid, *self.m["probe"]],
                env=self.builder.env, capture_output=True, check=False,
            )  # fmt: skip
            if probe.returncode != 0:
                return False
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
            except psycopg.OperationalError:
                return False
            return True

        wait_for(ready, timeout=timeout, interval=0.5)

    def exec(self, cid: str, *cmd: str) -> str:
        return docker(self.builder, "exec", cid, *cmd)


MARKER = "CREATE TABLE IF NOT EXISTS init_runs (at timestamptz DEFAULT now());\n" \
         "INSERT INTO init_runs DEFAULT VALUES;\n"  # fmt: skip


@pytest.mark.images
def test_postgres_initializes_once_as_999_and_takes_scram_logins_over_tcp(
    builder: Builder, standins: list[str], containers: list[str], tmp_path: Path
) -> None:
    pg = Postgres(builder, containers, tmp_path)
    assert pg.m["image"] == images.POSTGRES
    (pg.init / "20-marker.sql").write_text(MARKER)
    # shell scripts too: sourced when not executable, run when they are; psql is on their PATH
    insert = (
        'psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
        '-c "INSERT INTO init_runs DEFAULT VALUES"\n'
    )
    (pg.init / "30-sourced.sh").write_text(insert)
    (pg.init / "40-run.sh").write_text("#!/bin/bash\nset -e\n" + insert)
    (pg.init / "40-run.sh").chmod(0o755)

    first = pg.start()
    pg.wait_ready(first)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.url(password="wrong"), connect_timeout=5).close()
    with psycopg.connect(pg.url(), autocommit=True) as conn:

        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        assert int(one("SHOW server_version_num")) >= 180000
        assert one("SELECT current_setting('data_directory')") == "/var/lib/postgresql/18/docker"
        assert one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
        databases = dict(conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database").fetchall())  # fmt: skip
        # POSTGRES_DB, and the one the manifest's init SQL creates
        assert databases["orders"] == "cqrs" and databases["stats"] == "cqrs", databases
        assert one("SELECT count(*) FROM init_runs") == 3  # 20-marker.sql, 30-*.sh, 40-*.sh
        assert one("SELECT rolpassword FROM pg_authid WHERE rolname = 'cqrs'").startswith(
            "SCRAM-SHA-256$"
        )
        rules = conn.execute(
            "SELECT type, address, auth_method FROM pg_hba_file_rules WHERE type = 'host'"
        ).fetchall()
        assert ("host", "all", "scram-sha-256") in rules, rules
        assert {method for _, _, method in rules} == {"scram-sha-256"}, rules
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives a restart')")

    # PID 1 is postgres itself, as 999; its default is every address, the socket in the emptyDir
    status = pg.exec(first, "cat", "/proc/1/status")
    assert re.search(r"^Uid:\s+999\s", status, re.M), status
    assert pg.exec(first, "cat", "/proc/1/cmdline").split("\0")[0] == "postgres"
    assert pg.exec(first, "postgres", "-C", "listen_addresses").strip() == "*"
    assert pg.exec(first, "postgres", "-C", "unix_socket_directories").strip() == pg.m["run"]
    assert (pg.data / "18" / "docker" / "PG_VERSION").stat().st_uid == 999
    first_log = logs(builder, first)
    assert first_log.count("running /docker-entrypoint-initdb.d/") == len(pg.init_files) + 3

    # SIGTERM (smart shutdown): clean once no client is left
    docker(builder, "kill", "--signal", "TERM", first)
    assert wait_exit(builder, first) == 0, logs(builder, first)
    assert "database system is shut down" in logs(builder, first)

    # the kubelet applies fsGroup to the volume again at each mount: every folder g+rwx and
    # setgid, which PostgreSQL refuses for its data folder (found on the project's node, where
    # the first restart of the pod crash-looped); the official image makes it 0700 each start
    pgdata = pg.data / "18" / "docker"
    for folder in (pg.data / "18", pgdata):
        folder.chmod(0o2770)
    # a second start on the same volume: the data stays, initdb and the init scripts do not run
    second = pg.start()
    pg.wait_ready(second)
    conn = psycopg.connect(pg.url(), autocommit=True)
    try:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives a restart",)]
        assert conn.execute("SELECT count(*) FROM init_runs").fetchone()[0] == 3
        second_log = logs(builder, second)
        assert "initializing" not in second_log and "initdb.d" not in second_log, second_log
        assert "database system was shut down at" in second_log, second_log
        # the image's stop signal (SIGINT, fast shutdown) stops it with a client still connected
        started = time.monotonic()
        docker(builder, "stop", "--time", "30", second, timeout=90)
        assert inspect(builder, second)["State"]["ExitCode"] == 0, logs(builder, second)
        assert time.monotonic() - started < 20
    finally:
        conn.close()


@pytest.mark.images
def test_postgres_first_start_that_fails_leaves_the_volume_empty_and_the_next_starts_afresh(
    builder: Builder, standins: list[str], containers: list[str], tmp_path: Path
) -> None:
    pg = Postgres(builder, containers, tmp_path)
    pgdata = pg.data / "18" / "docker"

    no_password = pg.start(password=False)
    assert wait_exit(builder, no_password) == 1
    assert "POSTGRES_PASSWORD is empty" in logs(builder, no_password)
    assert not list(pgdata.iterdir())

    (pg.init / "20-broken.sql").write_text("CREATE TABLE broken (;\n")
    broken = pg.start()
    assert wait_exit(builder, broken, timeout=180) != 0
    assert "is empty again" in logs(builder, broken), logs(builder, broken)
    assert not list(pgdata.iterdir()), sorted(p.name for p in pgdata.iterdir())

    (pg.init / "20-broken.sql").write_text(MARKER)
    fixed = pg.start()
    pg.wait_ready(fixed)
    with psycopg.connect(pg.url(db="stats")) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "stats"
    with psycopg.connect(pg.url()) as conn:
        assert conn.execute("SELECT count(*) FROM init_runs").fetchone()[0] == 1


# --- curl as the outbox relay CronJob runs it ----------------------------------------------------


@pytest.mark.images
def test_curl_is_8_3_or_later_and_posts_the_token_as_the_relay_cronjob_does(
    builder: Builder, standins: list[str], tmp_path: Path
) -> None:
    docs = list(yaml.safe_load_all(RELAY_MANIFEST.read_text()))
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == images.CURL
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    run_as = [
        "--user", str(security["runAsUser"]), "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
    ]  # fmt: skip

    out = docker(builder, "run", "--rm", "--network", "none", *run_as, images.CURL, "--version")
    version = re.match(r"curl (\d+)\.(\d+)\.(\d+)", out)
    assert version, out
    assert tuple(map(int, version.groups())) >= (8, 3, 0), out
    assert inspect(builder, images.CURL)["Config"]["User"].split(":")[0] == "100"

    # the CronJob's own arguments, its URL pointed at a loopback stand-in for order-db
    (mount,) = container["volumeMounts"]
    token = "token-" + secrets.token_hex(8)
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    tokens.chmod(0o755)
    (tokens / "cqrs-order-db").write_text(token + "\n")  # {{token:trim}} drops the newline
    seen: list[tuple[str, str, str | None]] = []
    with json_server(
        b"{}", lambda h: seen.append((h.command, h.path, h.headers.get("Authorization")))
    ) as url:
        args = [f"{url}/outbox/relay" if a.startswith("http://") else a for a in container["args"]]
        assert args != container["args"], "the CronJob's URL was not found in its args"
        docker(
            builder, "run", "--rm", "--network", "host", *run_as,
            "-v", f"{tokens}:{mount['mountPath']}:ro", images.CURL, *args,
        )  # fmt: skip
    assert seen == [("POST", "/outbox/relay", f"Bearer {token}")]


# --- the shop's six images, by `make images` ----------------------------------------------------


@pytest.mark.images
def test_shop_images_come_from_make_images_and_save_with_the_standins_in_one_tar(
    builder: Builder, standins: list[str], tmp_path: Path
) -> None:
    # the Makefile's default TAG, as the cluster uses: shop_images drops the six's other tags
    done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    tag = done.stdout.strip() or "dev"
    started = time.monotonic()
    refs = builder.shop_images("dev.local", tag)
    print(f"shop images: {time.monotonic() - started:.1f}s")
    assert refs == [f"dev.local/cqrs-{role.name}:{tag}" for role in ROLES]
    python_base = builder.base("python")
    for role, ref in zip(ROLES, refs, strict=True):
        config = inspect(builder, ref)["Config"]
        assert f"ROLE={role.name}" in config["Env"] and config["User"] == "10001:10001"
    # built on the python base, itself on the stand-ins' base: one root layer for all
    layers = {ref: inspect(builder, ref)["RootFS"]["Layers"] for ref in [*refs, *standins]}
    base_layers = inspect(builder, python_base)["RootFS"]["Layers"]
    assert all(layers[ref][: len(base_layers)] == base_layers for ref in refs)
    root = inspect(builder, builder.base("bookworm"))["RootFS"]["Layers"][0]
    assert layers[images.POSTGRES][0] == layers[images.CURL][0] == base_layers[0] == root

    started = time.monotonic()
    out = builder.save([*refs, *standins], tmp_path / "images.tar")
    print(f"save: {time.monotonic() - started:.1f}s, {out.stat().st_size / 2**20:.0f} MiB")
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sorted(t for entry in manifest for t in entry["RepoTags"]) == sorted([*refs, *standins])
