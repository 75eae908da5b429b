"""`dvp bench`: run benchmark suites and the gross-versus-net study; write one directory of results per run.

Registered with the `dvp` command through the entry-point group
`dvp.commands` (see pyproject.toml), so the engine knows nothing of it:

    dvp bench [SUITE...] [--scale small|medium|large|N] [--seed N] [--out DIR] [--jobs N]
              [--executor dask://HOST:PORT] [--peer tigerbeetle=HOST:PORT] [--points N]
    dvp bench frontier FILE [--out DIR] [--jobs N] [--executor dask://HOST:PORT] [--points N]
    dvp bench compare FILE [--out DIR] [--jobs N]
    dvp bench generate OUT [--participants N --trades N --skew A --directionality D
                            --sizes lognormal:MU,SIGMA --intraday PEAKS --repo-share F --liquidity X --seed S]

With no SUITE the study runs: `frontier`, `compare`, `throughput`. `all`
runs every suite. `--scale` is a name (small: 2,000 trades; medium:
100,000; large: 1,000,000) or a number multiplying every suite's sizes
(1 = medium). Each run writes `DIR/<UTC time>-<commit>/`: one
`SUITE.json` per suite (every figure, the workload's parameters, the
commit, version, time and machine, the targets), `run.json`, and the
frontier's PNG (or CSV). Each suite shows a progress bar and prints a
table of its targets with PASS or FAIL. Exit status: 0 when every target
that applies passed, 4 when one failed (an invariant broke or a target was
missed; the results are still written), 1 for an error (one line; `--debug`
shows the traceback), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .results import RunDir, Target, print_targets, write_suite

SCALES = {"small": 0.02, "medium": 1.0, "large": 10.0}
STUDY = ("frontier", "compare", "throughput")
EXIT_TARGET_MISSED = 4
SMALL_SECONDS_MAX = 60


@dataclasses.dataclass
class Context:
    run: RunDir
    console: Any
    scale: float
    scale_name: str
    seed: int | None
    jobs: int
    executor: str | None
    peers: dict[str, str]
    points: int
    securities: str
    files: dict[str, str]  # suite -> the trade file it studies (frontier, compare)


# ------------------------------------------------------------------ suites


def _frontier(ctx: Context):
    from .study.suites import frontier

    return frontier(ctx.run, ctx.console, file=ctx.files.get("frontier"), scale=ctx.scale, seed=ctx.seed,
                    jobs=ctx.jobs, executor=ctx.executor, points=ctx.points, securities=ctx.securities)


def _compare(ctx: Context):
    from .study.suites import compare

    return compare(ctx.run, ctx.console, file=ctx.files.get("compare"), scale=ctx.scale, seed=ctx.seed,
                   jobs=ctx.jobs, executor=ctx.executor)


def _throughput(ctx: Context):
    from . import throughput
    from . import workloads as W

    return throughput.run(ctx.scale, ctx.console, seed=W.SEED if ctx.seed is None else ctx.seed, peers=ctx.peers)


def _engine(ctx: Context):
    from .engine import run

    results = run(out=None, scale=ctx.scale, console=ctx.console)
    return results, _listed_targets(results)


def _service(ctx: Context):
    from .service import run

    results = run(out=None, scale=ctx.scale, console=ctx.console)
    return results, _listed_targets(results)


def _postgres(ctx: Context):
    from .postgres import run

    results = run(scale=ctx.scale, out=None, console=ctx.console)
    return results, _listed_targets(results)


def _iso(ctx: Context):
    try:
        import python_iso20022  # noqa: F401
    except ImportError:
        ctx.console.print("iso: skipped (needs the extra: pip install -e '.[iso20022]')")
        return {}, []
    from .iso import MESSAGES_DEFAULT, run

    results = run(messages=max(1, int(MESSAGES_DEFAULT * ctx.scale)), out=ctx.run.path, console=ctx.console)
    return results, _listed_targets(results)


def _listed_targets(results: dict) -> list[Target]:
    return [Target(t.get("measure") or t.get("mode", "?"), t.get("value", t.get("ratio")), f">= {t.get('target')}",
                   bool(t.get("pass"))) for t in results.get("targets", []) if isinstance(t, dict) and "pass" in t]


# (suite, measured key, target key, at least (True) or at most (False))
LEGACY_TARGETS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "replay": (("trades_per_second", "target_trades_per_second", True),
               ("peak_memory_mib", "target_peak_memory_mib", False)),
    "replay_hard": (("time_ratio_large_to_small", "target_time_ratio_max", False),
                    ("ratio_to_floor", "target_ratio_to_floor", True),
                    ("large_peak_memory_mib", "target_peak_memory_mib", False),
                    ("verify_seconds", "target_verify_seconds", False)),
    "netting": (("from_scratch_seconds", "target_seconds", False),),
    "offsetting": (("seconds", "target_seconds", False),),
    "revaluation": (("revaluation_seconds", "target_seconds", False),),
    "swaps": (("swaps_per_second", "target_swaps_per_second", True),),
}


def _settlement(name: str) -> Callable[[Context], tuple[dict, list[Target]]]:
    def run(ctx: Context):
        from .settlement import SUITES as SETTLEMENT

        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<34}"), BarColumn(), TimeElapsedColumn(),
                      console=ctx.console) as progress:
            task = progress.add_task(name, total=1)
            results = SETTLEMENT[name](ctx.scale, ctx.run.path)
            progress.advance(task)
        targets = [Target(measured, results[measured], f"{'>=' if least else '<='} {results[goal]}",
                          results[measured] >= results[goal] if least else results[measured] <= results[goal])
                   for measured, goal, least in LEGACY_TARGETS.get(name, ()) if measured in results and goal in results]
        ctx.console.print(f"[bold]{name}[/]: {json.dumps(results)}")
        return results, targets

    return run


# Suite name -> function(context) returning (figures, targets).
SUITES: dict[str, Callable[[Context], tuple[dict, list[Target]]]] = {
    "frontier": _frontier,
    "compare": _compare,
    "throughput": _throughput,
    "engine": _engine,
    "replay": _settlement("replay"),
    "replay_hard": _settlement("replay_hard"),
    "netting": _settlement("netting"),
    "offsetting": _settlement("offsetting"),
    "revaluation": _settlement("revaluation"),
    "margin_storm": _settlement("margin_storm"),
    "repo_replay": _settlement("repo_replay"),
    "swaps": _settlement("swaps"),
    "service": _service,
    "postgres": _postgres,
    "iso": _iso,
}
FILE_SUITES = ("frontier", "compare")


# --------------------------------------------------------------------- CLI


def _scale(text: str) -> tuple[float, str]:
    if text in SCALES:
        return SCALES[text], text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected small, medium, large or a positive number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value, f"{value:g}"


def _peer(text: str) -> tuple[str, str]:
    name, _, address = text.partition("=")
    if name != "tigerbeetle" or not address:
        raise argparse.ArgumentTypeError(f"expected tigerbeetle=HOST:PORT, not {text!r}")
    return name, address


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def suites_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvp bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run benchmark suites and the gross-versus-net study (default: frontier, compare, throughput).",
        epilog="Suites: " + ", ".join(SUITES) + ", all.\n"
               "Also: dvp bench frontier FILE, dvp bench compare FILE (a recorded trade file), "
               "dvp bench generate OUT (a seeded day; --help for its options).")
    parser.add_argument("suites", nargs="*", metavar="SUITE [FILE]",
                        help="suites to run; frontier and compare may be followed by a trade file to study")
    parser.add_argument("--scale", type=_scale, default=(1.0, "medium"), metavar="small|medium|large|N",
                        help="workload sizes: small (2,000 trades), medium (100,000), large (1,000,000), or a "
                             "multiplier (default medium = 1)")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of the generated workloads")
    parser.add_argument("--out", default="bench-out", metavar="DIR",
                        help="results go to a new directory under DIR (default %(default)s)")
    parser.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes for the study's runs (default: the cores, %(default)s)")
    parser.add_argument("--executor", metavar="dask://HOST:PORT",
                        help="send the study's runs to this Dask cluster instead (extra: dask)")
    parser.add_argument("--peer", type=_peer, action="append", default=[], metavar="tigerbeetle=HOST:PORT",
                        help="also run the throughput baseline against this TigerBeetle server (extra: tigerbeetle)")
    parser.add_argument("--points", type=_positive_int, default=11, metavar="N",
                        help="liquidity levels of the frontier, LB to UB (default %(default)s)")
    parser.add_argument("--securities", choices=("ample", "file"), default="ample",
                        help="frontier openings in securities: each participant's deliveries of the day (ample, "
                             "so only cash binds) or the file's own (default %(default)s)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def generate_parser() -> argparse.ArgumentParser:
    from .tradegen import add_arguments

    parser = argparse.ArgumentParser(prog="dvp bench generate",
                                     description="Write a seeded trade file (the same seed always gives the same file).")
    add_arguments(parser)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand to the `dvp` parser (its own parsers read the rest of the line)."""
    bench = subparsers.add_parser("bench", add_help=False, prefix_chars="\x1f",  # no options here: main() reads them
                                  help="benchmark suites and the gross-versus-net study (dvp bench --help)",
                                  description="Run benchmark suites, the gross-versus-net study (frontier, compare), "
                                              "or generate a trade file; `dvp bench --help` lists them.")
    bench.add_argument("rest", nargs=argparse.REMAINDER,
                       help="a suite, `frontier FILE`, `compare FILE` or `generate OUT`, and its options")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    return main(args.rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        return _generate(generate_parser().parse_args(argv[1:]))
    parser = suites_parser()
    args = parser.parse_intermixed_args(argv)
    names, files = _plan(parser, args.suites)
    try:
        return _run(args, names, files)
    except Exception as exc:
        if args.debug:
            raise
        print(f"dvp bench: error: {exc}", file=sys.stderr)
        return 1


def _plan(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], dict[str, str]]:
    """Suite names in order, and the trade file given after frontier or compare."""
    names: list[str] = []
    files: dict[str, str] = {}
    for word in words:
        if word == "all":
            names += [n for n in SUITES if n not in names]
        elif word in SUITES:
            if word not in names:
                names.append(word)
        elif names and names[-1] in FILE_SUITES and names[-1] not in files:
            files[names[-1]] = word
        else:
            parser.error(f"unknown suite {word!r} (choose from {', '.join(SUITES)}, all; a trade file goes after "
                         "frontier or compare)")
    return names or list(STUDY), files


def _run(args: argparse.Namespace, names: list[str], files: dict[str, str]) -> int:
    from rich.console import Console

    console = Console()
    scale, scale_name = args.scale
    run = RunDir(args.out)
    ctx = Context(run=run, console=console, scale=scale, scale_name=scale_name, seed=args.seed, jobs=args.jobs,
                  executor=args.executor, peers=dict(args.peer), points=args.points, securities=args.securities,
                  files=files)
    console.print(f"results: {run.path}")
    started = time.perf_counter()
    summary: dict[str, Any] = {"suites": {}, "scale": scale_name, "argv": sys.argv[1:]}
    missed = False
    for name in names:
        what = f" {files[name]}" if name in files else f" (scale {scale_name})"
        console.rule(f"dvp bench {name}{what}")
        t0 = time.perf_counter()
        payload, targets = SUITES[name](ctx)
        payload = {"scale": {"name": scale_name, "factor": scale}, "seed": args.seed, **payload}
        path = write_suite(run, name, payload, targets)
        print_targets(console, name, targets)
        failed = [t.name for t in targets if t.ok is False]
        missed = missed or bool(failed)
        summary["suites"][name] = {"file": os.path.basename(path), "seconds": round(time.perf_counter() - t0, 2),
                                   "failed_targets": failed}
        console.print(f"{name}: {path}")
    elapsed = round(time.perf_counter() - started, 2)
    summary["elapsed_seconds"] = elapsed
    targets = []
    if scale_name == "small" and not files:
        targets.append(Target("the run at --scale small", f"{elapsed:.1f} s", f"< {SMALL_SECONDS_MAX} s",
                              elapsed < SMALL_SECONDS_MAX, f"on {os.cpu_count()} cores"))
    write_suite(run, "run", summary, targets)
    print_targets(console, "run", targets)
    missed = missed or any(t.ok is False for t in targets)
    console.print(f"all results in {run.path} ({elapsed:.1f} s)" + (" [red]some targets FAILED[/]" if missed else ""))
    return EXIT_TARGET_MISSED if missed else 0


def _generate(args: argparse.Namespace) -> int:
    from .tradegen import generate_day, params_from

    try:
        generate_day(args.out, params_from(args))
    except ValueError as exc:
        print(f"dvp bench generate: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a file that cannot be written, a day the bounds cannot be taken of
        print(f"dvp bench generate: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
