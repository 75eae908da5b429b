"""Benchmark results: one directory per run, one JSON file per suite, and the PASS/FAIL tables.

Takes a suite's figures and targets; gives `RunDir` (a new directory under
`--out` for each run, never reused, so no run overwrites another's
results), `metadata()` (the commit, the version, the time, the machine:
CPU, cores, memory, Python and library versions), `write_suite` (the
suite's JSON file, written whole or not at all) and `print_targets` (the
suite's table of targets with PASS or FAIL).

A target is `Target(name, value, goal, ok)`; `ok` is None when it does not
apply or could not be measured here (it prints as `n/a` with the reason).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata as importlib_metadata
from typing import Any

LIBRARIES = ("msgspec", "pynacl", "cryptography", "rich", "matplotlib", "dask", "distributed", "tigerbeetle",
             "psycopg")


@dataclasses.dataclass
class Target:
    name: str
    value: Any
    goal: str
    ok: bool | None
    note: str = ""

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "goal": self.goal,
                "result": "PASS" if self.ok else "n/a" if self.ok is None else "FAIL", "note": self.note}


class RunDir:
    """`OUT/<UTC time>-<commit>[-n]`: made new for this run (the name is taken exclusively)."""

    def __init__(self, out: str, label: str = ""):
        os.makedirs(out, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        commit = (_git("rev-parse", "--short", "HEAD") or "nogit")
        base = os.path.join(out, "-".join(filter(None, (stamp, commit, label))))
        n = 1
        path = base
        while True:
            try:
                os.mkdir(path)
                break
            except FileExistsError:
                n += 1
                path = f"{base}-{n}"
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)


def _git(*args: str) -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=5)
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def metadata() -> dict[str, Any]:
    """What a result needs to be compared and cited: code, time, machine."""
    status = _git("status", "--porcelain", "--", "engine", "protocols", "benchmarks")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "version": _version("dvp-settlement"),
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["dvp", *sys.argv[1:]]) if sys.argv else None,
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gib": _memory_gib(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "sqlite": sqlite3.sqlite_version,
            "libraries": {name: _version(name) for name in LIBRARIES if _version(name)},
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }


def write_suite(run: RunDir, suite: str, payload: dict[str, Any], targets: list[Target] = ()) -> str:
    """Write `<run>/<suite>.json` whole or not at all: the payload, the metadata and the targets."""
    document = {"suite": suite, "meta": metadata(), **payload, "targets": [t.row() for t in targets]}
    path = run.file(f"{suite}.json")
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(document, handle, indent=2, default=_default)
        handle.write("\n")
    os.replace(temporary, path)
    return path


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def print_targets(console, suite: str, targets: list[Target]) -> None:
    from rich.table import Table

    if not targets:
        return
    table = Table(title=f"{suite}: targets")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("result")
    for t in targets:
        verdict = "[green]PASS[/]" if t.ok else "[dim]n/a[/]" if t.ok is None else "[red]FAIL[/]"
        table.add_row(t.name, str(t.value), t.goal, verdict + (f" [dim]({t.note})[/]" if t.note else ""))
    console.print(table)
