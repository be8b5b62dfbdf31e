"""`make images` says which container engine is missing, or whose daemon is down."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cqrs_common.roles import ROLES
from tests.cli.support import fake_tool
from tests.conftest import REPO

ROLE_NAMES = " ".join(r.name for r in ROLES)
IMAGES = REPO / "knative" / "scripts" / "images.sh"


ENGINES = {"docker", "podman", "buildah"}


def system_without_engines(into: Path) -> Path:
    """The machine's /usr/bin and /bin, less any real container engine (the image tests may
    have installed docker.io): only the fakes a test puts first on PATH are engines."""
    into.mkdir(exist_ok=True)
    for folder in (Path("/usr/bin"), Path("/bin")):
        for tool in folder.iterdir():
            link = into / tool.name
            if tool.name not in ENGINES and not link.exists():
                link.symlink_to(tool)
    return into


def images(bindir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    system = system_without_engines(bindir.parent / "system")
    return subprocess.run(
        [str(IMAGES), *args],
        env={"PATH": f"{bindir}:{system}", "TAG": "t1", "ROLES": ROLE_NAMES, **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def down_docker(bindir: Path) -> None:
    """A docker client whose daemon is not running: `docker info` fails as the real one does."""
    fake_tool(
        bindir,
        "docker",
        'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.'
        ' Is the docker daemon running?" >&2\nexit 1\n',
    )


def test_docker_installed_with_its_daemon_down_is_named_as_such(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    down_docker(bindir)
    result = images(bindir, "build")
    assert result.returncode == 2
    assert "not installed" not in result.stderr and "install docker" not in result.stderr
    assert "docker is installed but its daemon is not running" in result.stderr
    assert "Cannot connect to the Docker daemon" in result.stderr  # docker's own words


def test_no_engine_at_all_says_what_to_install(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    result = images(bindir, "build")
    assert result.returncode == 2
    assert "no container engine" in result.stderr


def test_podman_is_used_when_dockers_daemon_is_down(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    down_docker(bindir)
    fake_tool(bindir, "podman", f'echo "podman $*" >> "{tmp_path}/calls"\n')
    result = images(bindir, "build", ROLES="dispatcher")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text().startswith("podman build ")
