"""`dvp bench`: run benchmark suites, print their tables, write their JSON.

Registered with the `dvp` command through the entry-point group
`dvp.commands` (see pyproject.toml), so the engine knows nothing of it:

    dvp bench [SUITE...] [--scale N] [--out DIR]

With no SUITE every suite runs. `--scale` multiplies workload sizes
(0.1 for a quick look, 2 for steadier figures).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _engine(scale: float, out: str, console: Any) -> dict:
    from .engine import run

    return run(out=out, scale=scale, console=console)


def _service(scale: float, out: str, console: Any) -> dict:
    from .service import run

    return run(out=out, scale=scale, console=console)


def _postgres(scale: float, out: str, console: Any) -> dict:
    from .postgres import run

    return run(scale=scale, out=out, console=console)


def _iso(scale: float, out: str, console: Any) -> dict:
    try:
        import python_iso20022  # noqa: F401
    except ImportError:
        console.print("iso: skipped (needs the extra: pip install -e '.[iso20022]')")
        return {}
    from .iso import MESSAGES_DEFAULT, run

    return run(messages=max(1, int(MESSAGES_DEFAULT * scale)), out=out, console=console)


def _settlement(name: str) -> Callable[[float, str, Any], dict]:
    def run(scale: float, out: str, console: Any) -> dict:
        from .settlement import run as run_settlement

        return run_settlement([name], scale, out)[name]

    return run


# Suite name -> function(scale, out, console) returning the suite's results.
SUITES: dict[str, Callable[[float, str, Any], dict]] = {
    "engine": _engine,
    "replay": _settlement("replay"),
    "replay_hard": _settlement("replay_hard"),
    "netting": _settlement("netting"),
    "offsetting": _settlement("offsetting"),
    "compare": _settlement("compare"),
    "revaluation": _settlement("revaluation"),
    "margin_storm": _settlement("margin_storm"),
    "repo_replay": _settlement("repo_replay"),
    "swaps": _settlement("swaps"),
    "service": _service,
    "postgres": _postgres,
    "iso": _iso,
}


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand to the `dvp` parser."""
    bench = subparsers.add_parser(
        "bench",
        help="run benchmark suites (progress bars, terminal tables, JSON results)",
        description=f"Run benchmark suites: {', '.join(SUITES)} (default: all).",
    )
    bench.add_argument("suites", nargs="*", metavar="SUITE",
                       help=f"suites to run, of: {', '.join(SUITES)} (default: all)")
    bench.add_argument("--scale", type=_positive, default=1.0, metavar="N",
                       help="multiply workload sizes (default %(default)s)")
    bench.add_argument("--out", default="bench-out", metavar="DIR",
                       help="write SUITE.json results here (default %(default)s)")
    bench.set_defaults(func=_bench, bench_parser=bench)


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        args.bench_parser.error(f"unknown suite {', '.join(map(repr, unknown))} (choose from {', '.join(SUITES)})")
    console = Console()
    for name in args.suites or list(SUITES):
        console.rule(f"dvp bench {name} (scale {args.scale:g})")
        SUITES[name](args.scale, args.out, console)
    return 0
