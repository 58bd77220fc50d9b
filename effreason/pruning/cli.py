"""``effreason prune``: shorten R1-style reasoning traces for SFT by removing functional steps.

    effreason prune --input traces.jsonl --output pruned.jsonl --scorer lab --ratio 0.5
    effreason prune --input traces.jsonl --output random.jsonl --method random --tokenizer lab --ratio 0.5
    effreason prune --input open-r1/OpenR1-Math-220k --subset default --limit 2000 --skip-bad-rows \
        --scorer deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --ratio 0.3 --output openr1.jsonl --save-dataset openr1-pir

PIR (LIMOPro, arXiv 2505.19187): functional steps (verification, multi-method, error correction)
are scored by how much removing each one raises the perplexity of the gold answer's tokens (the
row's ``answer`` field, placed in the trace's final ``\boxed{}``; rows without one score the trace's
own boxed answer, and the summary counts them), and the lowest-scoring ones are removed up to
``--ratio`` of the functional steps. ``--method random`` removes the same
number at random (the baseline).

Input: a JSONL file, or a Hugging Face dataset (a ``save_to_disk`` folder, a parquet / json / csv
file, or a Hub id with ``--split`` / ``--subset``); ``--columns`` maps a dataset's own column names
onto the fields read. Output rows (JSONL) keep the original and pruned completions with per-step
labels and scores; ``<output>.summary.json`` holds the token reduction; ``--save-dataset DIR`` also
writes them as a Hugging Face dataset with an SFT-ready ``messages`` column. Re-running with the same
``--output`` resumes: traces already written are skipped, if the settings, the scorer's (or tokenizer's)
files and the input are the same (``<output>.config.json``; ``--overwrite`` starts over). An output this
command did not write is never written over, nor is the input; one run at a time writes an output.
"""

from __future__ import annotations

import argparse
import json
import logging


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("prune", help="PIR pruning of reasoning traces (SFT data)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True,
                   help="traces: a JSONL file, a dataset folder (save_to_disk), a parquet/json/csv file or a Hub id; "
                        "rows with problem+completion, prompt+completion or messages, and the gold answer")
    p.add_argument("--split", default="train", help="dataset split (datasets and Hub ids)")
    p.add_argument("--subset", default=None, help="Hub dataset configuration")
    p.add_argument("--columns", nargs="+", default=None, metavar="FIELD=COLUMN",
                   help="read a field (id, problem, prompt, completion, messages, answer) from another column")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out malformed rows (each reported, and counted in the summary) instead of stopping")
    p.add_argument("--output", required=True, help="output JSONL (appended to on resume; <output>.config.json "
                   "holds the settings a resume must match)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an earlier run of this command in --output (never a file it did not write)")
    p.add_argument("--save-dataset", default=None, metavar="DIR",
                   help="also write the output rows as a Hugging Face dataset (load_from_disk), with `messages`")
    p.add_argument("--method", choices=["pir", "random"], default="pir")
    p.add_argument("--ratio", type=float, default=0.5, help="share of functional steps to remove")
    p.add_argument("--scorer", help="causal LM that scores PIR (path, hub id or 'lab'); needed for pir")
    p.add_argument("--tokenizer", help="tokenizer that counts tokens, for --method random (pir uses the scorer's)")
    p.add_argument("--segmenter", choices=["paragraph", "lab"], default="paragraph")
    p.add_argument("--sentences-per-step", type=int, default=4,
                   help="paragraph segmenter: sentences per step when a long paragraph is split")
    p.add_argument("--max-paragraph-chars", type=int, default=1200,
                   help="paragraph segmenter: a longer paragraph is split into sentence groups")
    p.add_argument("--markers", default=None, metavar="FILE",
                   help="YAML/JSON marker phrases per functional kind (see effreason.pruning.load_marker_config)")
    p.add_argument("--seed", type=int, default=0, help="random baseline seed")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="padded tokens per scoring pass")
    p.add_argument("--answer-prefix", default=None,
                   help="fixed text between </think> and the gold answer when scoring (default: the trace's own "
                        "answer text up to its last \\boxed{)")
    p.add_argument("--no-prefix-reuse", action="store_true",
                   help="score every ablation with a full forward pass (no shared-prefix KV cache)")
    p.add_argument("--limit", type=int, default=None, help="the first N input rows only")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def check_paths(args: argparse.Namespace) -> None:
    """Output paths and the scorer / tokenizer, checked in milliseconds before traces or models are loaded."""
    from effreason.models import check_model_source
    from effreason.outputs import check_input_file, check_output_path

    if args.input.endswith((".jsonl", ".ndjson")):
        check_input_file(args.input, "--input")
    check_output_path(args.output, "--output", folder=False)
    if args.save_dataset:
        check_output_path(args.save_dataset, "--save-dataset")
    if args.markers:
        check_input_file(args.markers, "--markers")
    if args.method == "pir":
        check_model_source(args.scorer, "--scorer")
    else:
        check_model_source(args.tokenizer or args.scorer, "--tokenizer" if args.tokenizer else "--scorer",
                           tokenizer_only=True)


def run(args: argparse.Namespace) -> int:
    from effreason import outputs
    from effreason.models import load_tokenizer, resolve_model_path
    from effreason.pruning.classify import MarkerClassifier, load_marker_config
    from effreason.pruning.prune import is_pruned_dataset, output_files
    from effreason.pruning.segment import LabSegmenter, ParagraphSegmenter

    if args.method == "pir" and not args.scorer:
        raise ValueError("--method pir needs --scorer (a causal LM; 'lab' for the lab model)")
    if args.method == "pir" and args.tokenizer:
        raise ValueError("--tokenizer is for --method random; pir scores and counts with the scorer's tokenizer")
    if not args.scorer and not args.tokenizer:
        raise ValueError("--method random needs --tokenizer (or --scorer) to count tokens")
    if not 0.0 <= args.ratio <= 1.0:
        raise ValueError(f"--ratio must be in [0, 1], got {args.ratio}")
    check_paths(args)
    files = output_files(args.output)
    outputs.refuse_input_as_output({"--input": args.input}, [*files.values(), args.save_dataset])
    if args.save_dataset:
        outputs.refuse_input_as_output({"--output": args.output}, [args.save_dataset])
        outputs.refuse_unowned_directory(args.save_dataset, is_pruned_dataset(args.save_dataset), "effreason prune")
    # the settings, then every row, then the output are checked before the scorer is loaded
    segmenter = LabSegmenter() if args.segmenter == "lab" else ParagraphSegmenter(
        max_paragraph_chars=args.max_paragraph_chars, sentences_per_step=args.sentences_per_step)
    classifier = MarkerClassifier(load_marker_config(args.markers)) if args.markers else MarkerClassifier()
    tokenizer = load_tokenizer(args.tokenizer or args.scorer)
    settings = {"ratio": args.ratio, "method": args.method, "answer_prefix": args.answer_prefix, "segmenter": segmenter,
                "classifier": classifier, "seed": args.seed, "max_batch_tokens": args.max_batch_tokens,
                "reuse_prefix": not args.no_prefix_reuse}
    with outputs.output_lock(files["lock"], f"the prune output {args.output}"):
        return _run_locked(args, tokenizer, settings, resolve_model_path(args.scorer) if args.scorer else None)


def _run_locked(args: argparse.Namespace, tokenizer, settings: dict, scorer: str | None) -> int:
    """Read the traces, check them and the output, load the scorer, prune (``args.output`` is locked)."""
    from effreason.jsonl import write_json
    from effreason.models import load_model_and_tokenizer
    from effreason.outputs import source_fingerprint
    from effreason.pruning import prune
    from effreason.pruning.pir import context_tokens

    context = None
    if args.method == "pir":
        from transformers import AutoConfig

        context = context_tokens(AutoConfig.from_pretrained(scorer))
    skipped = [] if args.skip_bad_rows else None
    traces = prune.load_traces(args.input, split=args.split, subset=args.subset, columns=args.columns,
                               limit=args.limit, check_answers=args.method == "pir", answer_prefix=args.answer_prefix,
                               skipped=skipped, scorer_tokenizer=tokenizer, scorer_context=context)
    if not traces:
        raise ValueError(f"no usable trace in {args.input}" + (f" ({len(skipped)} rows skipped)" if skipped else ""))
    source = {"input": source_fingerprint(args.input, split=args.split, subset=args.subset), "columns": args.columns}
    fingerprint = {**prune.run_fingerprint(tokenizer=tokenizer.name_or_path, scorer=scorer, **settings), **source}
    prune.claim_output(args.output, fingerprint, overwrite=args.overwrite, write=False)
    model = None
    if args.method == "pir":
        model, tokenizer = load_model_and_tokenizer(scorer)
    summary = prune.prune_to_jsonl(traces, args.output, tokenizer=tokenizer, model=model, overwrite=args.overwrite,
                                   source=source, progress=not args.no_progress, **settings)
    summary = {**summary, "method": args.method, "ratio": args.ratio, "input": args.input}
    if skipped is not None:
        summary["skipped_rows"] = len(skipped)
    no_gold = summary.get("prune/pir_target_boxed", 0) + summary.get("prune/pir_target_answer", 0)
    if no_gold:
        logging.getLogger(__name__).warning(
            "%d of %d rows have no gold `answer`: PIR scored the trace's own final answer for them", no_gold,
            summary["prune/traces"])
    if args.save_dataset:
        rows = prune.save_pruned_dataset(args.output, args.save_dataset, ids=[t["id"] for t in traces])
        summary["saved_dataset"] = f"{args.save_dataset} ({rows} rows)"
    write_json(f"{args.output}.summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0
