"""``effreason eval``: accuracy and what each answer cost in tokens.

Examples::

    effreason eval --model lab --benchmark lab --output runs/eval/lab
    effreason eval --model lab --benchmark lab --budgets 16,32,64,128 --output runs/eval/lab-budgets
    effreason eval --model Qwen/Qwen3-1.7B --benchmark math500 --backend vllm --output runs/eval/q3
    effreason eval --completions api_outputs.jsonl --tokenizer Qwen/Qwen3-1.7B --output runs/eval/api
    effreason eval compare runs/eval/* --baseline runs/eval/lab --plot runs/eval/compare.png
    effreason eval leaderboard --model lab --benchmark lab --backend vllm --output runs/leaderboard

Re-running a command with the same ``--output`` resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys

from effreason.evaluation.config import EvalConfig

logger = logging.getLogger(__name__)

BENCHMARK_NAMES = "lab, lab_hard, gsm8k, math500, aime24, aime25, amc23"


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _weights(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        return tuple(float(x) for x in parts)  # type: ignore[return-value]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated weights a,b,c, got {text!r}") from None


def _unescape_newlines(text: str) -> str:
    # Only `\n`: a general unescape would turn the `\b` of `\boxed` into a backspace.
    return text.replace("\\n", "\n")


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``effreason eval`` (everything but generation methods)."""
    src = p.add_argument_group("what to evaluate (one of --benchmark, --data, --completions)")
    src.add_argument("--benchmark", help=f"benchmark name: {BENCHMARK_NAMES}")
    src.add_argument("--data", help="a JSONL of problems (with --prompt-field, --answer-field)")
    src.add_argument("--completions", help="grade these completions (JSONL) instead of generating")
    src.add_argument("--split", default="test", help="benchmark split (default: test)")
    src.add_argument("--data-dir", help="folder of offline benchmark copies")
    src.add_argument("--limit", type=int, help="first N problems only")
    src.add_argument("--prompt-field", help="problem text field of --data (default problem) or --completions (prompt)")
    src.add_argument("--answer-field", default="answer", help="gold answer field (default: answer)")
    src.add_argument("--id-field", help="unique id field (default: row number for --data, `id` for --completions)")
    src.add_argument("--completion-field", default="completion", help="completion field of --completions")
    src.add_argument("--instruction", help="text appended to each problem (e.g. a TLDR length level such as "
                     "'level short'); `math` = the standard 'put your final answer within \\boxed{}' "
                     "instruction (default: none)")
    model = p.add_argument_group("model and generation")
    model.add_argument("--model", help="hub id, local path, or `lab` (the shipped lab model)")
    model.add_argument("--adapter", help="LoRA adapter directory (PEFT)")
    model.add_argument("--tokenizer", help="tokenizer for token counts in --completions mode")
    model.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="generation backend (default: hf)")
    model.add_argument("--dtype", help="float32, bfloat16, ... (default: float32 on CPU, bf16/auto on GPU)")
    model.add_argument("--device", help="cpu, cuda, ... (hf backend; default: cuda if available)")
    model.add_argument("--batch-size", type=int, help="sequences per HF generate call (64) / prompts per vLLM call (512)")
    model.add_argument("--max-model-len", type=int, help="vLLM context length (default: longest prompt + max tokens)")
    model.add_argument("--max-new-tokens", type=int, help="completion cap (default: 384 for lab, 4096 otherwise)")
    model.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    model.add_argument("--top-p", type=float, default=1.0)
    model.add_argument("-k", "--samples", type=int, default=1, help="samples per problem (needs --temperature > 0)")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--system-prompt", help="system message (replaces any in the benchmark prompt)")
    model.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                       help="feed the plain problem text instead of the chat template")
    model.add_argument("--chat-template-kwargs", type=_json_dict, default={},
                       help='JSON passed to apply_chat_template, e.g. \'{"enable_thinking": true}\'')
    bud = p.add_argument_group("thinking budgets (s1-style budget forcing)")
    bud.add_argument("--budgets", type=_ints, default=[], help="comma-separated thinking budgets, e.g. 64,128,256")
    bud.add_argument("--answer-prefix", type=_unescape_newlines,
                     help="text forced after </think> at the budget, `\\n` read as a newline (default: "
                     "' the answer is \\boxed{' for lab, '\\n\\nThe final answer is \\boxed{' otherwise)")
    bud.add_argument("--budget-answer-tokens", type=int, default=32, help="tokens allowed after the forced text")
    grade = p.add_argument_group("grading and reporting")
    grade.add_argument("--grading", choices=["math", "exact"], help="default: the benchmark's (math for files)")
    grade.add_argument("--last-number-fallback", action="store_const", const=True, default=None,
                       help="grade the last number when there is no \\boxed{} answer")
    grade.add_argument("--grade-timeout", dest="grade_timeout_s", type=float, default=5.0, help="seconds per item")
    grade.add_argument("--grade-workers", type=int, default=1, help="grading processes")
    grade.add_argument("--baseline", help="a baseline run directory: report token reduction and AES against it")
    grade.add_argument("--aes-weights", type=_weights, default=(1.0, 3.0, 5.0), help="AES a,b,c (default 1,3,5)")
    p.add_argument("--output", help="output directory (re-run with the same one to resume)")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run in --output")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories (or results.json files)")
    p.add_argument("--baseline", help="baseline run directory (one of the runs; added if missing)")
    p.add_argument("--plot", help="write the accuracy-vs-tokens plot here (.png)")
    p.add_argument("--table", help="also write the markdown table here")
    p.add_argument("--title", help="plot title")
    p.add_argument("--aes-weights", type=_weights, default=(1.0, 3.0, 5.0), help="AES a,b,c (default 1,3,5)")


#: ``effreason eval <name>`` -> module with ``HELP``, ``add_arguments(parser)`` (which sets ``func``) and a docstring.
EVAL_SUBCOMMANDS = {"exit-bench": "effreason.early_exit.bench", "steer-bench": "effreason.steering.bench"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``effreason eval`` and ``effreason eval compare``."""
    from effreason.generation.methods import available_methods

    p = subparsers.add_parser("eval", help="evaluate accuracy and token cost",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(p)
    methods = p.add_argument_group("generation-time methods")
    for method in available_methods().values():
        method.add_arguments(methods)
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="eval_command", metavar="{compare,leaderboard,exit-bench}", title="sub-commands")
    c = sub.add_parser("compare", help="table and plot of several runs",
                       description="Compare eval runs: a table, and accuracy vs tokens with the Pareto frontier.")
    add_compare_arguments(c)
    c.set_defaults(func=run_compare)
    from effreason.evaluation import leaderboard

    lb = sub.add_parser("leaderboard", help="every test-time method over its knob, and trained models, on one chart",
                        description=leaderboard.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    leaderboard.add_arguments(lb)
    for name, where in EVAL_SUBCOMMANDS.items():  # tools of other packages, found by name (no import arrow up)
        module = importlib.import_module(where)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Build the validated config from parsed arguments (``EvalConfig`` refuses methods the backend cannot run)."""
    from effreason.generation.methods import active_methods

    if not args.output:
        raise ValueError("--output DIR is required (results go there; re-run with it to resume)")
    methods = active_methods(args)
    names = [f for f in EvalConfig.__dataclass_fields__ if f != "methods" and hasattr(args, f)]
    return EvalConfig(**{f: getattr(args, f) for f in names}, methods=methods)


def check_sources(cfg: EvalConfig) -> None:
    """The run's paths, model, adapter and tokenizer, checked in milliseconds before anything is loaded.

    Raises:
        UserError: naming the option and the path or id (``effreason.errors``, ``effreason.models``).
    """
    from effreason.models import check_model_source
    from effreason.outputs import check_input_file, check_output_path

    check_output_path(cfg.output, "--output")
    for option, path in (("--data", cfg.data), ("--completions", cfg.completions)):
        if path:
            check_input_file(path, option)
    if cfg.model and cfg.completions is None:
        check_model_source(cfg.model, "--model")
    if cfg.adapter:
        check_model_source(cfg.adapter, "--adapter", adapter=True)
    if cfg.tokenizer:
        check_model_source(cfg.tokenizer, "--tokenizer", tokenizer_only=True)
    if cfg.baseline:
        from effreason.evaluation.compare import load_results

        load_results(cfg.baseline)  # read at the end: a missing one must fail now
    if cfg.completions is None and cfg.backend == "hf":
        _check_device(cfg.device, cfg.dtype)


def _check_device(device: str | None, dtype: str | None) -> None:
    """``--device`` / ``--dtype`` of the HF backend (torch would fail with a traceback after loading)."""
    import torch

    from effreason.errors import UserError

    if device is not None:
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise UserError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu or leave it out")
    if dtype is not None and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise UserError(f"--dtype {dtype!r} is not a torch dtype (float32, bfloat16, float16)")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    check_sources(cfg)
    if cfg.backend == "vllm" and cfg.completions is None and importlib.util.find_spec("vllm") is None:
        from effreason.generation.vllm import INSTALL_HINT

        raise ValueError(f"the vllm backend needs the vllm package; install it with: {INSTALL_HINT}")
    if cfg.completions is not None:
        from effreason.evaluation.completions import grade_completions

        results = grade_completions(cfg)
    else:
        from effreason.evaluation.runner import run_eval

        results = run_eval(cfg)
    print(format_results(results))
    print(f"wrote {cfg.output}/results.json, samples.jsonl, summary.md")
    return 0


def _f(value: object, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def format_results(r: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"accuracy {_f(r['accuracy'])} (n={r['n']}, samples/problem={r['samples_per_problem']})"]
    if r.get("parallel") and r["parallel"]["method"] != "majority":
        par = r["parallel"]
        lines[0] = (f"accuracy {_f(r['accuracy'])} ({par['method']}, k={par['k']}, m={par['m']}: the vote of the counted "
                    f"samples; n={r['n']}); per sample {_f(r.get('sample_accuracy'))}")
        lines.append(f"latency tokens {_f(par['latency_tokens_mean'], '.1f')}, compute tokens "
                     f"{_f(par['compute_tokens_mean'], '.1f')} per problem")
    elif "majority_accuracy" in r:
        lines.append(f"mean accuracy over k {_f(r['accuracy_mean_at_k'])}, majority vote {_f(r['majority_accuracy'])}, "
                     f"pass@k {_f(r['pass_at_k'])}")
    lines.append(f"tokens mean {_f(r['tokens_mean'], '.1f')} / median {_f(r['tokens_median'], '.1f')} / "
                 f"p90 {_f(r['tokens_p90'], '.1f')} / max {_f(r['tokens_max'], '.0f')}; thinking "
                 f"{_f(r['thinking_tokens_mean'], '.1f')}, answer {_f(r['answer_tokens_mean'], '.1f')}")
    lines.append(f"truncation rate {_f(r['truncation_rate'])}; EFF {_f(r['eff'], '.5f')}; "
                 f"accuracy per 1k tokens {_f(r['accuracy_per_1k_tokens'])}")
    if r.get("early_exit"):
        ex = r["early_exit"]
        lines.append(f"early exit (delta {ex['delta']}): exited {_f(ex['exit_rate'])}, exited and wrong "
                     f"{_f(ex['exited_wrong_rate'])}; {_f(ex['discarded_tokens_mean'], '.1f')} tokens per completion "
                     "generated past the cut (not in the token figures)")
    if r.get("budgets"):
        per = ", ".join(f"{b}: {_f(f['accuracy'])} ({_f(f['tokens_mean'], '.1f')} tok)" for b, f in r["budgets"].items())
        lines.append(f"budgets {per}; AUC {_f(r['budget_auc'])}")
    if r.get("vs_baseline"):
        vb, w = r["vs_baseline"], r["vs_baseline"]["aes_weights"]
        lines.append(f"vs baseline {vb['baseline']}: token reduction {_f(vb['token_reduction'])}, "
                     f"AES {_f(vb['aes'])} (a={w['a']}, b={w['b']}, c={w['c']})")
    t = r["throughput"]
    timing = f"wall {r['wall_time_s']:.1f} s"
    if t["problems"]:
        timing += (f"; model load {t['model_load_s']:.1f} s; generation {t['generation_s']:.1f} s "
                   f"({_f(t['problems_per_s'], '.2f')} problems/s, {_f(t['tokens_per_s'], '.0f')} tokens/s)")
    timing += f"; grading {t['grading_s']:.2f} s"
    if r["resumed_rows"]:
        timing += f"; resumed {r['resumed_rows']} rows"
    lines.append(timing)
    return "\n".join(lines)


def run_compare(args: argparse.Namespace) -> int:
    from effreason.evaluation import compare
    from effreason.outputs import check_output_path

    for option, path in (("--plot", args.plot), ("--table", args.table)):
        if path:
            check_output_path(path, option, folder=False)
    for out in (args.table, args.plot):
        compare.refuse_foreign_output(out)
    paths = list(args.runs)
    if args.baseline and args.baseline not in paths:
        paths.insert(0, args.baseline)
    labels = compare.run_labels(paths)
    runs = {label: compare.load_results(path) for label, path in zip(labels, paths, strict=True)}
    baseline = labels[paths.index(args.baseline)] if args.baseline else None
    table = compare.markdown_table(compare.comparison_rows(runs, baseline, args.aes_weights))
    print(table)
    if baseline:
        a, b, c = args.aes_weights
        print(f"AES weights: a={a}, b={b}, c={c} (O1-Pruner, arXiv 2501.12570); baseline: {baseline}")
    if args.table:
        from effreason.jsonl import atomic_write

        with atomic_write(args.table) as f:
            f.write(table)
    if args.plot:
        compare.plot_runs(runs, args.plot, baseline=baseline, title=args.title)
        print(f"wrote {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m effreason.evaluation.cli ...`` (same as ``effreason eval ...``)."""
    from effreason.cli import main as effreason_main

    return effreason_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
