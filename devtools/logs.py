"""Logs for a person at a terminal: `make run` keeps each role's JSON log in its own file
(var/log/<role>.log) and shows one compact line per request; `make logs` follows the files.

Containers keep JSON on stdout (cqrs_common.logs); this module only reads those lines back:
    12:03:04.123 order-db        POST / 200 3.1ms order.placed 4bf92f35
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

LOG_SUBDIR = "log"
ROLE_WIDTH = 15  # "stats-order-db" and a space
SHORT_TRACE = 8  # enough to tell orders apart on one screen, and to grep the JSON for the rest


def log_path(data_dir: Path, role: str) -> Path:
    """Where `make run` writes a role's JSON log: <data dir>/log/<role>.log."""
    return Path(data_dir) / LOG_SUBDIR / f"{role}.log"


def compact_line(entry: Mapping[str, Any], role: str = "") -> str:
    """One JSON log entry as a short line: time, role, then the request (method path status
    duration, the event type, a short trace id) or the level and message."""
    stamp = str(entry.get("timestamp", ""))
    try:
        clock = datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        clock = stamp[:12]
    who = str(entry.get("role") or role)[: ROLE_WIDTH - 1].ljust(ROLE_WIDTH)
    trace = str(entry.get("trace_id") or _trace_from_parent(entry.get("traceparent")) or "")
    if "method" in entry and "status" in entry:
        parts = [f"{entry['method']} {entry.get('path', '')} {entry['status']}"]
        if entry.get("duration_ms") is not None:
            parts.append(f"{float(entry['duration_ms']):.1f}ms")
        ce_type = str(entry.get("ce_type") or "")
        if ce_type:
            parts.append(ce_type.removeprefix("com.example.cqrs."))
    else:
        parts = [f"{entry.get('severity', 'INFO')} {entry.get('message', '')}"]
        if entry.get("exception"):
            parts.append("\n" + str(entry["exception"]))
    if trace:
        parts.append(trace[:SHORT_TRACE])
    return f"{clock} {who}{' '.join(parts)}"


def _trace_from_parent(traceparent: object) -> str | None:
    fields = str(traceparent or "").split("-")
    return fields[1] if len(fields) == 4 and len(fields[1]) == 32 else None


def render(raw: str, role: str) -> str:
    """A line of a role's log file for the terminal: compact when JSON, as it is otherwise
    (gunicorn's own start-up lines, a traceback from before logging was set up)."""
    text = raw.rstrip("\n")
    try:
        entry = json.loads(text)
    except ValueError:
        entry = None
    if isinstance(entry, dict):
        return compact_line(entry, role)
    return f"{'':12} {role[: ROLE_WIDTH - 1].ljust(ROLE_WIDTH)}{text}"


def follow(
    paths: Sequence[Path],
    write: Callable[[str], None],
    stop: threading.Event,
    *,
    from_start: bool = False,
    poll: float = 0.2,
    render_line: Callable[[str, str], str] = render,
) -> None:
    """Copy new lines of every file to `write`, rendered, until `stop` is set. A file that does
    not exist yet is picked up when it appears; one truncated or replaced is read anew."""
    files: dict[Path, tuple[IO[str], int]] = {}
    partial: dict[Path, str] = {}
    first = True
    try:
        while True:
            for path in paths:
                opened = files.get(path)
                try:
                    inode = path.stat().st_ino
                except OSError:
                    continue
                if opened is None or opened[1] != inode:
                    if opened is not None:
                        opened[0].close()
                    handle = path.open(encoding="utf-8", errors="replace")
                    if first and not from_start:
                        handle.seek(0, 2)
                    files[path] = opened = (handle, inode)
                handle = opened[0]
                if path.stat().st_size < handle.tell():
                    handle.seek(0)  # truncated
                chunk = handle.read()
                if not chunk:
                    continue
                text = partial.pop(path, "") + chunk
                lines = text.split("\n")
                if lines[-1]:
                    partial[path] = lines[-1]  # a line still being written
                for line in lines[:-1]:
                    if line:
                        write(render_line(line, path.stem))
            first = False
            if stop.wait(poll):
                return
    finally:
        for handle, _ in files.values():
            handle.close()


def start_follower(paths: Sequence[Path], out: IO[str] | None = None) -> threading.Event:
    """For the supervisor of `make run`: show the roles' logs on the terminal from a daemon
    thread; set the returned event to stop it."""
    stream = out or sys.stdout
    stop = threading.Event()

    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    threading.Thread(
        target=follow, args=(paths, write, stop), name="log-follower", daemon=True
    ).start()
    return stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Follow the roles' logs of `make run`.")
    parser.add_argument("files", nargs="*", type=Path, help="log files (default: var/log/*.log)")
    parser.add_argument("--data-dir", default="var", type=Path)
    parser.add_argument("--json", action="store_true", help="the JSON lines as they are")
    parser.add_argument("--all", action="store_true", help="from the start of each file")
    args = parser.parse_args(argv)
    paths = args.files or sorted((args.data_dir / LOG_SUBDIR).glob("*.log"))
    if not paths:
        print(
            f"no logs under {args.data_dir / LOG_SUBDIR}; is `make run` running?", file=sys.stderr
        )
        sys.exit(1)
    stop = threading.Event()

    def write(line: str) -> None:
        print(line, flush=True)

    def as_written(raw: str, role: str) -> str:
        return raw

    with contextlib.suppress(KeyboardInterrupt):
        follow(
            paths, write, stop, from_start=args.all, render_line=as_written if args.json else render
        )


if __name__ == "__main__":
    main()
