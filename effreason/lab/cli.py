"""``effreason lab``: build and inspect the embedded lab.

    effreason lab bootstrap --out DIR [--seed 0] [--steps N]   # train the overthinker (~10 min, 2 CPU cores)
    effreason lab bootstrap-base --out DIR [--seed 0]          # train the direct-answer base (lab_base, ~12 min)
    effreason lab bootstrap-grid --out DIR                      # the bootstrap over seeds x threads, as a table
    effreason lab warmup-grid --out DIR                         # the slippy and level warm-ups, the same way
    effreason lab show [--split test] [--n 3]                  # print lab problems and traces
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def add_parser(subparsers) -> None:
    lab = subparsers.add_parser("lab", help="the embedded reasoning lab (task, traces, overthinker model)")
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

    boot = sub.add_parser("bootstrap", help="SFT-train the overthinker base model and write metrics.json")
    boot.add_argument("--out", required=True, help="output directory (checkpoint + metrics.json)")
    from effreason.lab.trainers.config import BootstrapConfig

    for field in dataclasses.fields(BootstrapConfig):
        kind = int if field.type in ("int", "int | None") else float if field.type == "float" else str
        boot.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=kind,
                          default=field.default, help=f"(default: {field.default})")
    boot.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in --out")
    boot.add_argument("--keep-failed", action="store_true", help="save the model even when it misses the gate")
    boot.set_defaults(func=_run_bootstrap)

    direct = sub.add_parser("bootstrap-base", help="train the base model that answers without thinking (lab_base) "
                            "from the overthinker, and write metrics.json")
    direct.add_argument("--out", required=True, help="output directory (a new folder: checkpoint + metrics.json)")
    direct.add_argument("--seed", type=int, default=0)
    direct.add_argument("--threads", type=int, default=2, help="torch threads (the shipped base: 2)")
    direct.add_argument("--start", default="lab", help="model to start from (default: the shipped overthinker)")
    direct.add_argument("--first-phase", type=int, default=0, help="continue a build whose earlier phases are in "
                        "--start (default 0: all phases from the overthinker)")
    direct.add_argument("--keep-failed", action="store_true", help="save the model even when it misses the gate")
    direct.set_defaults(func=_run_bootstrap_base)

    grid = sub.add_parser("bootstrap-grid", help="benchmark: the bootstrap for each seed x thread count, as a table")
    grid.add_argument("--out", required=True, help="folder for one checkpoint per cell (s<seed>-t<threads>)")
    grid.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    grid.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default: 1,2)")
    grid.set_defaults(func=_run_grid)

    wgrid = sub.add_parser("warmup-grid", help="benchmark: the slippy and level warm-ups for each seed x thread count")
    wgrid.add_argument("--out", required=True, help="folder for one warm-up per cell (<kind>-s<seed>-t<threads>)")
    wgrid.add_argument("--model", default="lab", help="model to warm up (default: the shipped lab checkpoint)")
    wgrid.add_argument("--kinds", default="slippy,levels", help="comma-separated warm-ups (default: slippy,levels)")
    wgrid.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    wgrid.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default: 1,2)")
    wgrid.set_defaults(func=_run_warmup_grid)

    show = sub.add_parser("show", help="print lab problems with an oracle and a sampled trace")
    show.add_argument("--split", default="test", choices=["train", "test", "hard", "dev"])
    show.add_argument("--n", type=int, default=3)
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(func=_run_show)


def _run_bootstrap(args: argparse.Namespace) -> int:
    from effreason.lab.trainers.bootstrap import GateFailed, run_bootstrap
    from effreason.lab.trainers.config import BootstrapConfig
    from effreason.outputs import check_output_path

    check_output_path(args.out, "--out")
    names = {f.name for f in dataclasses.fields(BootstrapConfig)}
    cfg = BootstrapConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        metrics = run_bootstrap(cfg, args.out, overwrite=args.overwrite, keep_failed=args.keep_failed)
    except GateFailed as e:
        print(f"effreason lab bootstrap: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: metrics[k] for k in ("accuracy", "tokens_mean", "oracle_tokens_mean",
                                              "tokens_ratio", "hard_accuracy", "no_think_accuracy",
                                              "steps_trained", "wall_time_s")}, indent=2))
    return 0


def _run_bootstrap_base(args: argparse.Namespace) -> int:
    from effreason.lab.trainers.bootstrap import GateFailed
    from effreason.lab.trainers.direct import build_direct_base
    from effreason.outputs import check_output_path

    check_output_path(args.out, "--out")
    try:
        metrics = build_direct_base(args.out, start=args.start, seed=args.seed, threads=args.threads,
                                    first_phase=args.first_phase, keep_failed=args.keep_failed)
    except GateFailed as e:
        print(f"effreason lab bootstrap-base: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: metrics[k] for k in ("check", "test", "wall_time_s")}, indent=2))
    return 0


def _run_grid(args: argparse.Namespace) -> int:
    from effreason.lab.bench import bootstrap_grid

    bootstrap_grid(args.out, seeds=[int(s) for s in args.seeds.split(",")],
                   threads=[int(t) for t in args.threads.split(",")])
    return 0


def _run_warmup_grid(args: argparse.Namespace) -> int:
    from effreason.lab.bench import warmup_grid

    warmup_grid(args.out, model=args.model, kinds=args.kinds.split(","), seeds=[int(s) for s in args.seeds.split(",")],
                threads=[int(t) for t in args.threads.split(",")])
    return 0


def _run_show(args: argparse.Namespace) -> int:
    import random

    from effreason.lab.datasets import lab_problems
    from effreason.lab.traces import oracle_trace, sample_style, write_trace

    if args.n < 1:
        raise ValueError(f"--n must be >= 1 (problems to show), got {args.n}")
    rng = random.Random(args.seed)
    for problem in lab_problems(args.split)[: args.n]:
        print(f"problem : {problem.text()}")
        print(f"answer  : {problem.answer}")
        print(f"oracle  : {oracle_trace(problem).text}")
        print(f"sampled : {write_trace(problem, sample_style(rng, 0.8), rng).text}\n")
    return 0
