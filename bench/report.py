"""The report: Markdown tables (printed, and written between markers in docs/benchmarks.md) and a
PNG plot beside it."""

from __future__ import annotations

import contextlib
import math
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cqrs_common.roles import ROLES

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# The answer to "how fast, does it scale, on what machine", written at the top of the report.
SUMMARY_BEGIN, SUMMARY_END = "<!-- bench:summary:begin -->", "<!-- bench:summary:end -->"
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PREAMBLE = f"""# Benchmarks

Measured by `make bench` (`python -m bench`); what it measures and how is in bench/.

{SUMMARY_BEGIN}
{SUMMARY_END}

## Latest run

{BEGIN}
{END}
"""


def _num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _md(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# The targets the project set itself (docs/benchmarks.md), the projection's among them.
Target = tuple[str, str, str, str, bool]  # key, what, wanted, measured, met


def _targets(backend: dict[str, Any], sqlite: dict[str, Any] | None = None) -> list[Target]:
    """(key, what, wanted, measured, met) for each target; `sqlite` is the same run's SQLite
    part, for PostgreSQL's "within 30 % of SQLite"."""
    top = backend["levels"][-1]
    first, last = backend["drains"][0], backend["drains"][-1]
    slowest = max(backend["cold_start_s"].items(), key=lambda kv: kv[1])
    biggest = max(backend["memory"].items(), key=lambda kv: kv[1]["pss_mib"])
    change = last["projected_per_s"] / first["projected_per_s"] - 1
    cpu = sum(top["cpu_ms_per_order"].get(role.name, 0.0) for role in ROLES)
    clients = top["clients"]
    targets = [
        ("rate", f"accepted orders/s, {clients} clients", ">= 450",
         _num(top["accepted_per_s"]), top["accepted_per_s"] >= 450),
        ("p99", f"p99 latency, {clients} clients", "< 150 ms",
         f"{_num(top['p99_ms'])} ms", top["p99_ms"] < 150),
        ("lag", f"consistency lag p99, {clients} clients", "< 250 ms",
         f"{_num(top['lag_p99_ms'])} ms", top["lag_p99_ms"] < 250),
        ("cpu", "CPU per order, all roles", "<= 5 ms", f"{_num(cpu, 2)} ms", cpu <= 5),
        ("projected", f"projected orders/s at {last['stored_before']:,.0f} stored", ">= 200",
         _num(last["projected_per_s"]), last["projected_per_s"] >= 200),
        ("flat", f"projection rate, {last['stored_before']:,.0f} vs {first['stored_before']:,.0f}"
         " stored", "within 10%", f"{change:+.0%}", abs(change) <= 0.10),
        ("cold", "cold start, slowest role", "< 300 ms",
         f"{_num(slowest[1] * 1000)} ms ({slowest[0]})", slowest[1] < 0.3),
        ("pss", "PSS, biggest role", "<= 40 MiB",
         f"{_num(biggest[1]['pss_mib'], 1)} MiB ({biggest[0]})", biggest[1]["pss_mib"] <= 40),
    ]  # fmt: skip
    if sqlite is not None and sqlite is not backend:
        ratio = top["accepted_per_s"] / sqlite["levels"][-1]["accepted_per_s"] - 1
        targets.append(("vs-sqlite", f"accepted orders/s vs SQLite, {clients} clients",
                        "within 30%", f"{ratio:+.0%}", ratio >= -0.30))  # fmt: skip
    return targets


def _by_backend(results: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {b["backend"]: b for b in (results or {}).get("backends", [])}


def _levels_table(backend: dict[str, Any]) -> str:
    """One row per client count: the scaling of the write path and the read side behind it."""
    return _md(
        ["clients", "orders", "accepted/s", "p50 ms", "p99 ms", "lag p50 ms", "lag p99 ms",
         "projected/s", "errors"],
        [(str(p["clients"]), _num(p["orders"]), _num(p["accepted_per_s"]), _num(p["p50_ms"], 1),
          _num(p["p99_ms"], 1), _num(p["lag_p50_ms"]), _num(p["lag_p99_ms"]),
          _num(p["projected_per_s"]), str(p["errors"])) for p in backend["levels"]],
    )  # fmt: skip


def _batches_table(backend: dict[str, Any]) -> str:
    """One row per fill batch: whether the numbers hold as the stores grow."""
    return _md(
        ["stored after", "accepted/s", "p50 ms", "p99 ms", "lag p50 ms", "lag p99 ms",
         "projected/s"],
        [(_num(p["stored_after"]), _num(p["accepted_per_s"]), _num(p["p50_ms"], 1),
          _num(p["p99_ms"], 1), _num(p["lag_p50_ms"]), _num(p["lag_p99_ms"]),
          _num(p["projected_per_s"])) for p in backend["batches"]],
    )  # fmt: skip


def _drains_table(backend: dict[str, Any]) -> str:
    return _md(
        ["stored before", "queued", "projected/s"],
        [(_num(d["stored_before"]), _num(d["orders"]), _num(d["projected_per_s"]))
         for d in backend["drains"]],
    )  # fmt: skip


def _roles_table(backend: dict[str, Any]) -> str:
    """Per role, then the CPU total and the CPU spent outside the roles (server, load client)."""
    roles = [role.name for role in ROLES]
    cpu = backend["levels"][-1]["cpu_ms_per_order"]
    return _md(
        ["role", "cold start ms", "RSS MiB", "PSS MiB", "CPU ms/order"],
        [(r, _num(backend["cold_start_s"][r] * 1000), _num(backend["memory"][r]["rss_mib"], 1),
          _num(backend["memory"][r]["pss_mib"], 1), _num(cpu.get(r, float("nan")), 2))
         for r in roles]
        + [("**all roles**", "", "", "", _num(sum(cpu.get(r, 0.0) for r in roles), 2))]
        + [(f"({name})", "", "", "", _num(cpu[name], 2))
           for name in ("postgresql server", "bench client") if name in cpu],
    )  # fmt: skip


def _targets_table(backend: dict[str, Any], sqlite: dict[str, Any] | None,
                   previous: dict[str, Any] | None) -> str:  # fmt: skip
    """The targets, the run compared with (`previous`: the published one) beside this one."""
    before: dict[str, str] = {}
    if previous is not None:
        with contextlib.suppress(KeyError, IndexError, ZeroDivisionError):
            before = {key: got for key, _, _, got, _ in _targets(previous, sqlite=None)}
    # The previous run may not have a number (an older run, or one that needs its other store)
    before = {key: got for key, got in before.items() if got != "n/a"}
    return _md(
        ["target", "wanted", "previous run", "this run", "met"],
        [(what, want, before.get(key, "not measured"), got, "yes" if ok else "**no**")
         for key, what, want, got, ok in _targets(backend, sqlite)],
    )  # fmt: skip


def backend_section(backend: dict[str, Any], sqlite: dict[str, Any] | None = None,
                    previous: dict[str, Any] | None = None) -> str:  # fmt: skip
    """One store's part of the report: each table after the sentence that says what it holds.
    `sqlite`: the same run's SQLite part; `previous`: this store's part of the run compared
    with (the published one, docs/benchmarks.json)."""
    name = backend["backend"]
    load_before, load_after = backend["loadavg_before"], backend["loadavg_after"]
    clients = backend["levels"][-1]["clients"]
    parts = [
        f"### {NAMES.get(name, name)}",
        f"Load average (1 min) {load_before[0]:.2f} before the load, {load_after[0]:.2f} after.",
        "Through the dispatcher (`POST /api/orders`), then followed to `/api/stats`:",
        _levels_table(backend),
        "As the stores fill (32 clients, one row per batch):",
        _batches_table(backend),
        "Projection capacity: orders queued behind a paused process-data (SIGSTOP), then the"
        " rate at which the read side catches up once it resumes:",
        _drains_table(backend),
        "Per role: cold start (spawn to first 200 on `/healthz`, alone on the machine, median),"
        " memory after the load (master + worker, from smaps_rollup), and CPU per order in the"
        f" {clients}-client run:",
        _roles_table(backend),
        "The project's targets (docs/benchmarks.md says what bounds the missed ones), beside"
        " the run compared with:",
        _targets_table(backend, sqlite, previous),
    ]
    return "\n\n".join(parts)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        memory_gib = int(next(x for x in meminfo if x.startswith("MemTotal")).split()[1]) / 2**20
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_gib, 1),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def machine_line(results: dict[str, Any]) -> str:
    info = results.get("machine") or {"cpus": results.get("cpus")}
    parts = [f"{info.get('cpus')} CPUs" + (f" ({info['cpu_model']})" if info.get("cpu_model")
                                            else "")]  # fmt: skip
    if info.get("memory_gib"):
        parts.append(f"{info['memory_gib']:g} GiB of memory")
    if info.get("system"):
        parts.append(info["system"])
    if info.get("python"):
        parts.append(f"Python {info['python']}")
    return ", ".join(parts)


def _range(values: Sequence[float], unit: str, digits: int = 0) -> str:
    low, high = min(values), max(values)
    if _num(low, digits) == _num(high, digits):
        return f"{_num(low, digits)} {unit}"
    return f"{_num(low, digits)} to {_num(high, digits)} {unit}"


def summary(results: dict[str, Any]) -> str:
    """How fast, how it scales, on what machine: one table, one column per store."""
    backends = results["backends"]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("orders accepted per second, "
         + " / ".join(str(p["clients"]) for p in backends[0]["levels"]) + " clients",
         lambda b: " / ".join(_num(p["accepted_per_s"]) for p in b["levels"])),
        ("answer time (p50 / p99), 1 client",
         lambda b: f"{_num(b['levels'][0]['p50_ms'])} / {_num(b['levels'][0]['p99_ms'])} ms"),
        (f"answer time (p50 / p99), {backends[0]['levels'][-1]['clients']} clients",
         lambda b: f"{_num(b['levels'][-1]['p50_ms'])} / {_num(b['levels'][-1]['p99_ms'])} ms"),
        ("until an order shows in the totals (p50 / p99), 1 client",
         lambda b: f"{_num(b['levels'][0]['lag_p50_ms'])} / "
                   f"{_num(b['levels'][0]['lag_p99_ms'])} ms"),
        (f"until an order shows in the totals (p50 / p99), "
         f"{backends[0]['levels'][-1]['clients']} clients",
         lambda b: f"{_num(b['levels'][-1]['lag_p50_ms'])} / "
                   f"{_num(b['levels'][-1]['lag_p99_ms'])} ms"),
        ("as the store grows: accepted per second, first and last batch",
         lambda b: (f"{_num(b['batches'][0]['accepted_per_s'])} at "
                    f"{_num(b['batches'][0]['stored_after'])} → "
                    f"{_num(b['batches'][-1]['accepted_per_s'])} at "
                    f"{_num(b['batches'][-1]['stored_after'])} orders")
         if b["batches"] else "n/a"),
        ("as the store grows: orders projected per second",
         lambda b: (f"{_num(b['drains'][0]['projected_per_s'])} at "
                    f"{_num(b['drains'][0]['stored_before'])} → "
                    f"{_num(b['drains'][-1]['projected_per_s'])} at "
                    f"{_num(b['drains'][-1]['stored_before'])} orders")),
        ("cold start of a role (scale from zero)",
         lambda b: _range(list(b["cold_start_s"].values()), "s", 2)),
        ("memory per role (PSS)",
         lambda b: _range([m["pss_mib"] for m in b["memory"].values()], "MiB")),
    ]  # fmt: skip
    table = _md(
        ["", *(NAMES.get(b["backend"], b["backend"]) for b in backends)],
        [(what, *(cell(b) for b in backends)) for what, cell in rows],
    )
    head = (
        f"Measured on {machine_line(results)}, shared by the six roles, the stores and the load"
        f" client, on {results['date']}; every order stored durably before its 202."
    )
    if results["quick"]:
        head += " **Quick mode (BENCH_QUICK=1): small counts, the numbers are not comparable.**"
    return "\n\n".join([head, table])


def generated(results: dict[str, Any], image: str) -> str:
    head = (
        f"Run of {results['date']}{' (' + results['label'] + ')' if results['label'] else ''},"
        f" {results['cpus']} CPUs shared by the six roles, the stores and the load client;"
        f" {results['duration_s']:.0f} s in all."
    )
    if results["quick"]:
        head += " **Quick mode (BENCH_QUICK=1): small counts, the numbers are not comparable.**"
    sqlite = _by_backend(results).get("sqlite")
    previous = results.get("previous")
    if previous:
        head += f" Compared with the run of {previous.get('date', 'n/a')} (previous run)."
    before = _by_backend(previous)
    sections = [backend_section(b, sqlite, before.get(b["backend"])) for b in results["backends"]]
    return "\n\n".join([head, f"![benchmarks]({image})", *sections])


def table(results: dict[str, Any]) -> str:
    return generated(results, "benchmarks.png")


def _replace(text: str, begin: str, end: str, body: str) -> str:
    """`text` with what lies between the markers replaced (appended when they are missing)."""
    before, sep, rest = text.partition(begin)
    if not sep:
        before, rest = text + "\n", end + "\n"
    _, _, after = rest.partition(end)
    return f"{before}{begin}\n{body}\n{end}{after}"


def write(results: dict[str, Any], out: Path) -> None:
    """Replace the generated parts of `out` (between the markers), keep the prose around them."""
    image = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, image)
    text = out.read_text() if out.exists() else PREAMBLE
    if SUMMARY_BEGIN in text:
        text = _replace(text, SUMMARY_BEGIN, SUMMARY_END, summary(results))
    out.write_text(_replace(text, BEGIN, END, generated(results, image.name)))


# Colour and marker per store, so a store looks the same in all four panels.
STYLES = {"sqlite": ("tab:blue", "o"), "postgresql": ("tab:orange", "s")}
TITLES = [  # (title, x label, y label) of the four panels, row by row
    ("Orders accepted per second", "concurrent clients", "orders/s"),
    ("Latency of POST /api/orders", "concurrent clients", "ms"),
    ("Throughput as the stores fill (32 clients)", "stored orders", "orders/s"),
    ("Consistency lag and p99 as the stores fill", "stored orders", "ms"),
]


def _series(ax: Any, rows: list[dict], x: str, y: str, label: str, dashed: bool = False,
            scale: Callable[[float], float] = lambda v: v) -> None:  # fmt: skip
    color, marker = STYLES.get(label.split()[0], ("tab:gray", "x"))
    ax.plot([r[x] for r in rows], [scale(r[y]) for r in rows], marker=marker, color=color,
            linestyle="--" if dashed else "-", label=label)  # fmt: skip


def _plot_backend(axes: Any, backend: dict[str, Any]) -> None:
    """One store's lines in each panel: solid for the headline number, dashed for its companion."""
    name = backend["backend"]
    _series(axes[0][0], backend["levels"], "clients", "accepted_per_s", name)
    _series(axes[0][1], backend["levels"], "clients", "p99_ms", f"{name} p99")
    _series(axes[0][1], backend["levels"], "clients", "p50_ms", f"{name} p50", dashed=True)
    _series(axes[1][0], backend["batches"], "stored_after", "accepted_per_s", f"{name} accepted")
    _series(axes[1][0], backend["batches"], "stored_after", "projected_per_s",
            f"{name} projected", dashed=True)  # fmt: skip
    _series(axes[1][1], backend["batches"], "stored_after", "lag_p99_ms", f"{name} lag p99")
    _series(axes[1][1], backend["batches"], "stored_after", "p99_ms",
            f"{name} accept p99", dashed=True)  # fmt: skip


def _dress_axes(axes: Any, results: dict[str, Any]) -> None:
    for ax, (title, xlabel, ylabel) in zip([a for row in axes for a in row], TITLES, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # Client counts span 1 to 32: on a log scale the small ones do not crowd together.
    clients = sorted({p["clients"] for b in results["backends"] for p in b["levels"]})
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for backend in results["backends"]:
        _plot_backend(axes, backend)
    _dress_axes(axes, results)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
