"""`make help` and docs/configuration.md name every variable the Makefile and the code read.

The code's variables are found by reading it: `os.environ[...]`, `os.environ.get(...)`,
`os.getenv(...)` and `env.get(...)` (the Settings mapping) in Python, `${NAME:-...}` and the
like in shell scripts. A new variable fails here until both places name it.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO

MAKEFILE = REPO / "Makefile"
CONFIGURATION = REPO / "docs" / "configuration.md"
# Where the variables people set are read: the roles, the local stack, replay, the benchmark,
# the smoke client and the scripts behind make images / deploy.
PYTHON_SOURCES = ("functions", "devtools", "bench", "tests/e2e/smoke.py")
SHELL_SOURCES = ("functions", "knative/scripts")
NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Set by the Makefile for its own use, or by make itself: not knobs.
MAKE_INTERNAL = {"SHELL", "VENV", "PY", "ROLES", "PYTHONPATH", "PATH", "CURDIR", "CLUSTER_ENV",
                 "MAKE", "MAKEFLAGS"}  # fmt: skip
# The shell's own, which the dev tools extend or pass on rather than take as a setting.
SYSTEM = {"PATH"}


def _files(roots: tuple[str, ...], suffix: str) -> Iterator[Path]:
    for root in roots:
        path = REPO / root
        yield from [path] if path.is_file() else sorted(path.rglob(f"*{suffix}"))


def _is_environment(node: ast.expr) -> bool:
    """os.environ, or a mapping named env/environ (Settings.from_env's `env = os.environ`)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id in ("env", "environ")


def _read_key(node: ast.AST) -> ast.expr | None:
    """The key of an environment read, or None if `node` is not one."""
    # env["X"] = ... is the code setting a child's variable, not reading one
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and _is_environment(node.value)
    ):
        return node.slice
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environment(func.value):
            return node.args[0]
        if isinstance(func, ast.Attribute) and func.attr == "getenv":
            return node.args[0]
        # A helper given the environment and a name: `_required(env, "K_SINK", why)`.
        if len(node.args) >= 2 and _is_environment(node.args[0]):
            return node.args[1]
    return None


def python_reads(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        # cqrs_common.roles names the variable each role's URL is read from (Role.url_env).
        if (
            isinstance(node, ast.keyword)
            and node.arg == "url_env"
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            names.add(node.value.value)  # fmt: skip
        key = _read_key(node)
        if key is None:
            continue
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
            continue
        # A name read through a variable (`for var in (..., "X_URL")`): the names spelled out in
        # the enclosing comprehension or statement.
        scope = node
        while scope in parents and not isinstance(scope, (ast.stmt, ast.comprehension)):
            scope = parents[scope]
            if isinstance(scope, (ast.DictComp, ast.ListComp, ast.SetComp, ast.GeneratorExp)):
                break
        names |= {c.value for c in ast.walk(scope)
                  if isinstance(c, ast.Constant) and isinstance(c.value, str)
                  and NAME.match(c.value) and "_" in c.value}  # fmt: skip
    return {n for n in names if NAME.match(n)}


def shell_reads(path: Path) -> set[str]:
    """${NAME:-x}, ${NAME-x}, ${NAME:?x}, ${NAME:+x}: variables a script takes from outside."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?+])", path.read_text()))


@cache
def code_variables() -> frozenset[str]:
    names: set[str] = set()
    for path in _files(PYTHON_SOURCES, ".py"):
        names |= python_reads(path)
    for path in _files(SHELL_SOURCES, ".sh"):
        names |= shell_reads(path)
    return frozenset(names - SYSTEM)


@cache
def make_defaults() -> dict[str, str]:
    """Every `NAME ?= default` of the Makefile (the first one wins, as in make)."""
    defaults: dict[str, str] = {}
    for match in re.finditer(r"^([A-Z][A-Z0-9_]*)\s*\?=[ \t]*(.*)$", MAKEFILE.read_text(), re.M):
        defaults.setdefault(match[1], match[2].strip())
    return defaults


@cache
def make_inputs() -> frozenset[str]:
    """Variables the Makefile uses that nothing in it defines: they come from the command line
    or the environment (DOCKER_USER, PIPELINE_DRY_RUN)."""
    text = MAKEFILE.read_text()
    defined = set(re.findall(r"^(?:export\s+)?([A-Z][A-Z0-9_]*)\s*[:?+]?=", text, re.M))
    used = set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", text))
    return frozenset(used - defined - MAKE_INTERNAL)


@cache
def phony_targets() -> frozenset[str]:
    return frozenset(
        name
        for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE.read_text(), re.M)
        for name in line.split()
    )


@cache
def help_text() -> str:
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(REPO), "help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout


@cache
def documented() -> dict[str, list[str]]:
    """Each variable of docs/configuration.md's tables, with the cells of its row(s)."""
    rows: dict[str, list[str]] = {}
    for line in CONFIGURATION.read_text().splitlines():
        match = re.match(r"^\| `([A-Z][A-Z0-9_]*)` \|(.*)\|$", line)
        if match:
            rows.setdefault(match[1], []).extend(c.strip() for c in match[2].split("|"))
    return rows


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9_-]+", text))


def test_the_scanners_find_what_is_known_to_be_read() -> None:
    # A broken scanner would pass everything below.
    assert {"PORT", "K_SINK", "DATABASE_URL", "RELAY_ENABLED", "GUNICORN_THREADS",
            "ORDER_DB_DATABASE_URL", "ROLE", "BENCH_QUICK", "ENGINE",
            "DEPLOY_TIMEOUT"} <= code_variables()  # fmt: skip
    assert {"PYTHON", "TAG", "BASE_URL", "REPO_URL"} <= set(make_defaults())
    assert {"DOCKER_USER", "PIPELINE_DRY_RUN"} <= make_inputs()
    assert {"run", "test", "bench", "pipeline", "help"} <= phony_targets()


def test_make_help_names_every_target() -> None:
    missing = sorted(phony_targets() - words(help_text()))
    assert not missing, f"make help does not name: {missing}"


def test_make_help_names_every_make_variable_with_its_default() -> None:
    text = help_text()
    missing = sorted((set(make_defaults()) | make_inputs()) - words(text))
    assert not missing, f"make help does not name: {missing}"
    for name, default in make_defaults().items():
        if "$(" not in default:  # a computed default (git) is described, not spelled
            assert re.search(rf"(^|\s){name}={re.escape(default)}(\s|$)", text, re.M), (
                f"make help does not show {name}={default}"
            )


def test_make_help_names_every_variable_the_code_reads() -> None:
    missing = sorted(code_variables() - words(help_text()))
    assert not missing, f"make help does not name: {missing}"


@pytest.mark.parametrize("source", ["Makefile", "code"])
def test_docs_configuration_has_every_variable(source: str) -> None:
    names = set(make_defaults()) | make_inputs() if source == "Makefile" else code_variables()
    missing = sorted(names - set(documented()))
    assert not missing, f"docs/configuration.md has no row for: {missing}"


def test_docs_configuration_gives_each_make_default() -> None:
    for name, default in make_defaults().items():
        if "$(" in default:
            continue
        cells = " ".join(documented()[name])
        expected = f"`{default}`" if default else "empty"
        assert expected in cells, f"docs/configuration.md: {name} should default to {expected}"
