"""The role list is cqrs_common/roles.py; every other list of the roles the project keeps (the
test path, the linter's first-party packages) is checked against it here, the Tekton matrix in
tests/tekton and the image's allow-list in tests/images."""

from __future__ import annotations

import tomllib
from pathlib import Path

from cqrs_common.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_test_path_is_the_shared_package_and_every_role() -> None:
    paths = PROJECT["tool"]["pytest"]["ini_options"]["pythonpath"]
    assert paths == ["functions/shared", *(f"functions/{role.name}" for role in ROLES)]


def test_the_linters_first_party_packages_are_every_role() -> None:
    known = set(PROJECT["tool"]["ruff"]["lint"]["isort"]["known-first-party"])
    roles = {role.package for role in ROLES}
    assert roles <= known, sorted(roles - known)
    assert known - roles == {"cqrs_common", "devtools", "bench", "tests"}


def test_each_role_is_a_folder_with_its_package() -> None:
    folders = {p.name for p in (ROOT / "functions").iterdir() if (p / "__init__.py").exists()}
    assert not folders  # roles are folders holding a package, not packages themselves
    for role in ROLES:
        assert (ROOT / "functions" / role.name / role.package / "__init__.py").is_file(), role
    others = {
        p.name
        for p in (ROOT / "functions").iterdir()
        if p.is_dir() and p.name not in ("shared", "__pycache__")
    }
    assert others == {role.name for role in ROLES}
