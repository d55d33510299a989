"""The ``tenfold`` command line: list, run, report, info.

User errors (unknown experiment, field, preset or bad value) exit with status 2 and one
line naming the problem and the close matches; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2
        self.exit(EXIT_USAGE, f"tenfold: error: {message} (see `{self.prog} --help`)\n")


def _fail(msg: str) -> int:
    print(f"tenfold: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_list(args) -> int:
    from .core.experiment import all_methods, registry

    reg = registry()
    by_method: dict[str, list] = {}
    for e in reg.values():
        by_method.setdefault(e.method, []).append(e)
    for m, _ in all_methods():
        exps = by_method.get(m.key, [])
        tag = f"arXiv {m.arxiv}" if m.arxiv else "core"
        print(f"{m.key:10s} {m.title} ({tag})" + ("" if exps else "  -- not implemented yet"))
        for e in exps:
            print(f"  {e.name:28s} {e.summary}")
    return 0


def cmd_run(args) -> int:
    from .core.experiment import (
        ConfigError,
        get,
        make_config,
        parse_overrides,
        registry,
        run_experiment,
    )

    try:
        if args.name == "all":
            if args.set:
                return _fail("--set applies to one experiment, not to `all`")
            names = list(registry())
        else:
            names = [args.name]
        if not 0 <= args.seed < 2**63:
            raise ConfigError(f"--seed must be in [0, 2^63), got {args.seed}")
        plans = []
        for n in names:
            exp = get(n)
            if args.preset not in exp.presets:
                raise ConfigError(
                    f"unknown preset {args.preset!r} for {n}; choose {', '.join(exp.presets)}"
                )
            over = parse_overrides(exp.config_cls, args.set or [])
            make_config(
                exp.config_cls, {**exp.presets[args.preset], **over}, where=n
            )  # validate before running
            plans.append((n, over))
    except ConfigError as e:
        return _fail(str(e))
    try:  # where the runs go must be a folder we can write, before anything runs
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return _fail(f"cannot create run folders under {args.out}: a file is in the way")
    except OSError as e:
        return _fail(f"cannot create run folders under {args.out}: {e.strerror or e}")
    failed = []
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    for n, over in plans:
        if main_rank:
            print(f"== {n} [{args.preset}]", file=sys.stderr, flush=True)
        try:
            result, run_dir = run_experiment(
                n, args.preset, over, seed=args.seed, out=args.out, progress=not args.quiet
            )
        except ConfigError as e:
            return _fail(str(e))
        except Exception:  # noqa: BLE001 -- report, keep going with the others, exit 1
            if len(plans) == 1:
                raise
            import traceback

            traceback.print_exc()
            failed.append(n)
            continue
        if not main_rank:
            continue
        for c in result.claims:
            print(
                f"  [{c.verdict.value:12s}] {c.statement}\n                 measured: "
                f"{c.measured}\n                 effect: {c.evidence()}"
            )
        print(f"  saved {run_dir / 'result.json'}")
    if failed:
        print(f"tenfold: {len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from .core.report import write_report

    runs = Path(args.runs)
    if not runs.is_dir():
        return _fail(f"no runs folder at {runs}; run `tenfold run ...` first or name the folder")
    try:
        path = write_report(runs, Path(args.output))
    except OSError as e:
        return _fail(f"cannot write the report to {args.output}: {e.strerror or e}")
    print(f"wrote {path}")
    return 0


def cmd_docs(args) -> int:
    from .core.report import sync_docs

    root = Path(args.root)
    docs = root / "docs"
    if not docs.is_dir():
        return _fail(f"no docs folder at {docs}; run from the repository root or give --root")
    problems = sync_docs(docs, root, check=args.check)
    bad = [p for p in problems if not p.endswith(": regenerated")]
    for p in problems:
        print(p, file=sys.stderr if p in bad else sys.stdout)
    if bad:
        print(
            f"tenfold: {len(bad)} docs problem(s): run `tenfold docs` to regenerate the "
            "tables, and commit the result files they name",
            file=sys.stderr,
        )
        return 1
    print("docs agree with their result files" if args.check else "docs are up to date")
    return 0


def cmd_info(args) -> int:
    import importlib.util

    import torch

    from .core.experiment import machine_info, package_versions

    m = machine_info()
    for k, v in package_versions().items():
        print(f"{k:14s} {v}")
    print(
        f"{'cpu':14s} {m['cpu']} ({m['cpu_count']} cores, torch uses {m['torch_threads']} threads)"
    )
    gpu = torch.cuda.is_available()
    print(
        f"{'gpu':14s} {m['gpu'] or 'none'}"
        + (f" (capability {torch.cuda.get_device_capability(0)})" if gpu else "")
    )
    has_triton = importlib.util.find_spec("triton") is not None
    print(
        f"{'triton':14s} "
        + ("installed" if has_triton else "not installed")
        + (
            "; kernels run on the GPU"
            if has_triton and gpu
            else "; kernels run only under TRITON_INTERPRET=1"
            if has_triton
            else ""
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tenfold",
        description="Ten 2025 efficient-generative-AI papers: APIs and reproductions.",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"tenfold {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list methods and their experiments").set_defaults(fn=cmd_list)
    r = sub.add_parser("run", help="run an experiment (or all) and save its result")
    r.add_argument("name", help="experiment name, e.g. core/dit-digits, or 'all'")
    r.add_argument(
        "--preset", default="quick", help="quick (CPU, minutes) or full (default: quick)"
    )
    r.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)"
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="runs", help="runs folder (default: runs)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)
    rep = sub.add_parser("report", help="render report/index.html from saved runs")
    rep.add_argument("runs", nargs="?", default="runs", help="runs folder (default: runs)")
    rep.add_argument("-o", "--output", default="report", help="output folder (default: report)")
    rep.set_defaults(fn=cmd_report)
    d = sub.add_parser("docs", help="regenerate the docs' result tables from results/")
    d.add_argument("--check", action="store_true", help="only check; exit 1 if a table differs")
    d.add_argument("--root", default=".", help="repository root (default: .)")
    d.set_defaults(fn=cmd_docs)
    sub.add_parser("info", help="versions, devices, Triton and GPU availability").set_defaults(
        fn=cmd_info
    )
    _method_commands(sub)
    return p


def _method_commands(sub) -> None:
    """A method's own commands (``tenfold <method> ...``): its package's ``cli`` module
    with ``add_commands(subparsers, parser_class)``."""
    import importlib
    import importlib.util

    from .core.experiment import methods

    for m in methods():
        name = f"tenfold.{m.key}.cli"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).add_commands(sub, _Parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("tenfold: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
