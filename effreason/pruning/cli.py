"""``effreason prune``: shorten R1-style reasoning traces for SFT by removing functional steps.

    effreason prune --input traces.jsonl --output pruned.jsonl --scorer lab --ratio 0.5
    effreason prune --input traces.jsonl --output random.jsonl --method random --tokenizer lab --ratio 0.5

PIR (LIMOPro, arXiv 2505.19187): functional steps (verification, multi-method, error correction)
are scored by how much removing each one raises the perplexity of the answer, and the lowest-scoring
ones are removed up to ``--ratio`` of the functional steps. ``--method random`` removes the same
number at random (the baseline). Output rows keep the original and pruned completions with per-step
labels and scores; ``<output>.summary.json`` holds the token reduction. Re-running with the same
``--output`` resumes: traces already written are skipped.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("prune", help="PIR pruning of reasoning traces (SFT data)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="JSONL: problem+completion, prompt+completion or messages rows")
    p.add_argument("--output", required=True, help="output JSONL (appended to on resume)")
    p.add_argument("--method", choices=["pir", "random"], default="pir")
    p.add_argument("--ratio", type=float, default=0.5, help="share of functional steps to remove")
    p.add_argument("--scorer", help="causal LM that scores PIR (path, hub id or 'lab'); needed for pir")
    p.add_argument("--tokenizer", help="tokenizer that counts tokens, for --method random (pir uses the scorer's)")
    p.add_argument("--segmenter", choices=["paragraph", "lab"], default="paragraph")
    p.add_argument("--seed", type=int, default=0, help="random baseline seed")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="padded tokens per scoring pass")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _done_ids(path) -> set[str]:
    """Ids already written to ``path``; a torn last line (killed run) is dropped from the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    ids, good = set(), []
    for line in lines:
        try:
            ids.add(json.loads(line)["id"])
            good.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # only the last line can be torn: everything after it is dropped
    if len(good) != len(lines):
        path.write_text("".join(good), encoding="utf-8")
    return ids


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from effreason.jsonl import read_jsonl, write_json
    from effreason.models import load_model_and_tokenizer, load_tokenizer
    from effreason.pruning.prune import PrunedTrace, StepRecord, load_traces, prune_trace, summarize
    from effreason.pruning.segment import LabSegmenter, ParagraphSegmenter

    if args.method == "pir" and not args.scorer:
        raise ValueError("--method pir needs --scorer (a causal LM; 'lab' for the lab model)")
    if args.method == "pir" and args.tokenizer:
        raise ValueError("--tokenizer is for --method random; pir scores and counts with the scorer's tokenizer")
    if not args.scorer and not args.tokenizer:
        raise ValueError("--method random needs --tokenizer (or --scorer) to count tokens")
    if not 0.0 <= args.ratio <= 1.0:
        raise ValueError(f"--ratio must be in [0, 1], got {args.ratio}")
    traces = load_traces(args.input)[: args.limit]  # validates every row before any work
    model = None
    if args.method == "pir":
        model, tokenizer = load_model_and_tokenizer(args.scorer)
    else:
        tokenizer = load_tokenizer(args.tokenizer or args.scorer)
    segmenter = LabSegmenter() if args.segmenter == "lab" else ParagraphSegmenter()
    done = _done_ids(args.output)
    todo = [t for t in traces if t["id"] not in done]
    with open(args.output, "a", encoding="utf-8") as out:
        for trace in tqdm(todo, desc="prune", unit="trace", disable=args.no_progress):
            result = prune_trace(trace["id"], trace["problem"], trace["completion"], tokenizer=tokenizer,
                                 model=model, ratio=args.ratio, method=args.method, segmenter=segmenter,
                                 seed=args.seed, max_batch_tokens=args.max_batch_tokens)
            row = {**result.to_row(), "problem": trace["problem"], "answer": trace.get("answer")}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
    wanted = {t["id"] for t in traces}
    results = [PrunedTrace(**{**{k: r[k] for k in PrunedTrace.__dataclass_fields__},
                              "steps": [StepRecord(**s) for s in r["steps"]]})
               for r in read_jsonl(args.output) if r["id"] in wanted]
    summary = {**summarize(results), "method": args.method, "ratio": args.ratio, "input": args.input,
               "resumed_traces": len(traces) - len(todo)}
    write_json(f"{args.output}.summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0
