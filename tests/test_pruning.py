"""PIR trace pruning: segmentation, classification, PIR scoring, pruning (effreason.pruning)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from effreason.format import split_thinking
from effreason.grading import Grader
from effreason.jsonl import DataError
from effreason.lab.task import DEFAULT_DIFFICULTY, sample_problem
from effreason.lab.traces import PROGRESSIVE as LAB_PROGRESSIVE
from effreason.lab.traces import TraceStyle, oracle_trace, write_trace
from effreason.pruning import (
    ERROR_CORRECTION,
    MULTI_METHOD,
    PROGRESSIVE,
    VERIFICATION,
    LabSegmenter,
    MarkerClassifier,
    MarkerConfig,
    ParagraphSegmenter,
    is_functional,
    load_marker_config,
    load_traces,
    num_to_remove,
    parse_trace,
    pir_scores,
    prune_trace,
    prune_traces,
    summarize,
    time_pir_scoring,
)
from effreason.pruning.nll import _batches, _packs, answer_nll, common_prefix, shared_prefix_nll
from effreason.pruning.pir import ablation_sequences, scored_answer

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "r1_traces.jsonl"
# Errors and checks far more often than the shipped styles, so every segment kind shows up.
BUSY = TraceStyle(check=0.7, error=0.3, final_check=0.9)
LAB_KIND = {"verification": VERIFICATION, "recompute": VERIFICATION, "error": ERROR_CORRECTION,
            "correction": ERROR_CORRECTION}


def lab_traces(n: int, seed: int = 0, style: TraceStyle = BUSY):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        problem = sample_problem(rng, DEFAULT_DIFFICULTY)
        out.append((problem, write_trace(problem, style, rng)))
    return out


def lab_rows(n: int, seed: int = 0) -> list[dict]:
    return [{"id": f"lab-{i}", "problem": p.text(), "completion": t.text, "answer": str(t.answer)}
            for i, (p, t) in enumerate(lab_traces(n, seed))]


# ---------------------------------------------------------------- segmentation


def test_lab_segmenter_matches_generator_segments():
    for _, trace in lab_traces(300):
        thinking = split_thinking(trace.text).thinking
        segments = LabSegmenter()(thinking)
        assert "".join(segments) == thinking
        assert [s.strip() for s in segments] == [text for _, text in trace.segments]


def test_lab_segmenter_keeps_correction_and_check_whole():
    thinking = ("s1 4 + 2 = 6 ; wait , let me check s1 : 4 + 2 = 6 . yes ; s2 6 - 3 = 5 ; "
                "wait , that is wrong . s2 6 - 3 = 3 ; let me double check from the start : 4 + 2 = 6 , "
                "6 - 3 = 3 . yes ;")
    assert [s.strip() for s in LabSegmenter()(thinking)] == [
        "s1 4 + 2 = 6 ;", "wait , let me check s1 : 4 + 2 = 6 . yes ;", "s2 6 - 3 = 5 ;",
        "wait , that is wrong . s2 6 - 3 = 3 ;",
        "let me double check from the start : 4 + 2 = 6 , 6 - 3 = 3 . yes ;"]


def test_paragraph_segmenter_splits_blank_lines_and_rejoins():
    thinking = "First step.\nstill first.\n\n  Second step.\n\n\nThird."
    segments = ParagraphSegmenter()(thinking)
    assert "".join(segments) == thinking
    assert [s.strip() for s in segments] == ["First step.\nstill first.", "Second step.", "Third."]


def test_paragraph_segmenter_falls_back_to_sentence_groups():
    thinking = "A one. B two. C three? D four! E five. F six. G seven."
    segments = ParagraphSegmenter(max_paragraph_chars=20, sentences_per_step=3)(thinking)
    assert "".join(segments) == thinking
    assert [s.strip() for s in segments] == ["A one. B two. C three?", "D four! E five. F six.", "G seven."]


# ---------------------------------------------------------------- classification


def test_lab_labels_match_generator():
    checked = set()
    for _, trace in lab_traces(300):
        labels = MarkerClassifier()([text for _, text in trace.segments])
        for (kind, text), label in zip(trace.segments, labels, strict=True):
            assert is_functional(label) == (kind != LAB_PROGRESSIVE), (kind, text, label)
            if kind in LAB_KIND:
                assert label == LAB_KIND[kind]
            elif kind == "final_check":
                assert label == (MULTI_METHOD if text.startswith("alternatively") else VERIFICATION)
            checked.add(kind)
    assert checked == {LAB_PROGRESSIVE, "verification", "recompute", "error", "correction", "final_check"}


@pytest.mark.parametrize(("step", "label"), [
    ("Wait, 3 + 4 = 7.", VERIFICATION),
    ("WAIT. 3 + 4 = 7.", VERIFICATION),
    ("We await the result: 3 + 4 = 7.", PROGRESSIVE),  # word boundary: "await" is not "wait"
    ("Let me double-check: 7.", VERIFICATION),
    ("Let me double check: 7.", VERIFICATION),
    ("Alternatively, factor it.", MULTI_METHOD),
    ("So, another way to see it is symmetry.", MULTI_METHOD),
    ("Hmm, that's wrong: 3 + 4 is 7.", ERROR_CORRECTION),
    ("Hmm, that\u2019s wrong: 3 + 4 is 7.", ERROR_CORRECTION),
    ("Looking back, the mistake was the sign.", ERROR_CORRECTION),
    ("Then x = 17, which one can verify by substituting it back.", PROGRESSIVE),  # beyond the window
    ("Compute 3 + 4 = 7.", PROGRESSIVE),
])
def test_marker_rules(step, label):
    assert MarkerClassifier().label(step) == label


def test_retracted_step_is_error_correction_and_configurable():
    steps = ["x - 12 = 5, so x = -7.", "Hmm, that's wrong, x = 17.", "Done: x = 17."]
    assert MarkerClassifier()(steps) == [ERROR_CORRECTION, ERROR_CORRECTION, PROGRESSIVE]
    off = MarkerClassifier(MarkerConfig(label_retracted_step=False))
    assert off(steps) == [PROGRESSIVE, ERROR_CORRECTION, PROGRESSIVE]
    custom = MarkerClassifier(MarkerConfig(verification=("sanity",), window_words=1))
    assert custom(["Sanity: ok.", "Wait, ok.", "So sanity holds."]) == [VERIFICATION, PROGRESSIVE, PROGRESSIVE]
    with pytest.raises(ValueError, match="window_words"):
        MarkerConfig(window_words=0)


def test_marker_file_replaces_or_extends_the_lists(tmp_path):
    path = tmp_path / "markers.yaml"
    path.write_text("verification: [warte, moment mal]\nwindow_words: 3\n")
    replaced = MarkerClassifier(load_marker_config(path))
    assert replaced(["Warte, 3 + 4 = 7.", "Moment mal: ok.", "Wait, ok."]) == [VERIFICATION, VERIFICATION,
                                                                               PROGRESSIVE]
    path.write_text('{"extend": true, "multi_method": ["alternativ"]}')  # JSON is YAML too
    extended = MarkerClassifier(load_marker_config(path))
    assert extended(["Alternativ: 7.", "Alternatively, 7.", "Wait, ok."]) == [MULTI_METHOD, MULTI_METHOD,
                                                                             VERIFICATION]
    for text, error in [("verifcation: [x]\n", r"markers.yaml: 'verifcation' \(did you mean 'verification'"),
                        ("verification: wait\n", "'verification' must be a list of phrases"),
                        ("window_words: '6'\n", "'window_words' must be int"),
                        ("extend: 1\n", "'extend' must be true or false"),
                        ("- wait\n", "expected a mapping"),
                        ("verification: ['...']\n", "a phrase with no words")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=error):
            load_marker_config(path)
    with pytest.raises(ValueError, match="marker file not found"):
        load_marker_config(tmp_path / "none.yaml")


def test_r1_samples_segment_and_classify():
    rows = {r["id"]: r for r in load_traces(SAMPLES)}
    assert len(rows) == 6
    seg, cls = ParagraphSegmenter(), MarkerClassifier()

    def labelled(row_id, segmenter=seg):
        parsed = parse_trace(rows[row_id]["completion"], segmenter)
        assert parsed.render() == rows[row_id]["completion"]
        texts = [s.strip() for s in parsed.steps]
        return list(zip(cls(texts), texts, strict=True))

    divisors = labelled("r1-divisors")
    assert [label for label, _ in divisors] == [PROGRESSIVE, PROGRESSIVE, VERIFICATION, MULTI_METHOD, PROGRESSIVE]
    assert divisors[2][1].startswith("Wait, let me double-check by listing")
    linear = labelled("r1-linear")
    assert [label for label, _ in linear] == [PROGRESSIVE, ERROR_CORRECTION, ERROR_CORRECTION, VERIFICATION,
                                              PROGRESSIVE]
    assert linear[1][1].endswith("x = 5 - 12 = -7.")  # the retracted step
    assert [label for label, _ in labelled("r1-seating")][1:4] == [PROGRESSIVE, MULTI_METHOD, VERIFICATION]
    power = labelled("r1-power-mod", ParagraphSegmenter(max_paragraph_chars=200, sentences_per_step=4))
    assert [label for label, _ in power] == [PROGRESSIVE, VERIFICATION]
    assert power[1][1].startswith("Wait, let me check the cycle once more.")
    assert [label for label, _ in labelled("r1-marbles")] == [PROGRESSIVE, ERROR_CORRECTION, ERROR_CORRECTION,
                                                              MULTI_METHOD, PROGRESSIVE]


def test_load_traces_names_line_and_field(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": 1, "problem": "p", "completion": "<think> a </think> b"}\n'
                    '{"id": 2, "problem": "p"}\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: field 'completion'"):
        load_traces(path)
    path.write_text('{"id": 1, "problem": "p", "completion": "<think> a never closed"}\n')
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'completion'.*truncated"):
        load_traces(path)


# ---------------------------------------------------------------- PIR scoring


@pytest.mark.parametrize(("answer", "gold", "prefix", "want"), [
    # the lab: the gold replaces the box content; the blank that opened it goes with the gold
    (" the answer is \\boxed{ 7 }", "7", None, (" the answer is \\boxed{", " 7", "gold")),
    # the gold is scored even where the trace boxed something else
    (" the answer is \\boxed{ 3 }", "7", None, (" the answer is \\boxed{", " 7", "gold")),
    ("\n\nSo $x = 17$.\n\n$\\boxed{17}$", " 17 ", None, ("\n\nSo $x = 17$.\n\n$\\boxed{", "17", "gold")),
    # no box: the last occurrence of the gold text
    ("\nThe total is 42, so #### 42", "42", None, ("\nThe total is 42, so ####", " 42", "gold")),
    # a fixed lead-in instead of the trace's own
    ("\nSo 91.\n\\boxed{91}", "91", "\n\nFinal: \\boxed{", ("\n\nFinal: \\boxed{", "91", "gold")),
    # no gold: the trace's own boxed answer, else its whole answer text
    (" so \\boxed{ \\frac{1}{2} } done", None, None, (" so \\boxed{", " \\frac{1}{2}", "boxed")),
    ("\n\nThe answer is 12.", None, None, ("", "\n\nThe answer is 12.", "answer")),
])
def test_scored_answer_places_the_gold_tokens(answer, gold, prefix, want):
    got = scored_answer(answer, gold, prefix)
    assert (got.lead_in, got.target, got.kind) == want


def test_scored_answer_refuses_what_it_cannot_place():
    with pytest.raises(ValueError, match="does not contain the gold answer '5'"):
        scored_answer("\nThe answer is 4.", "5")
    with pytest.raises(ValueError, match="gold answer is empty"):
        scored_answer(" \\boxed{ 4 }", "  ")


def test_ablation_sequences_score_the_gold_tokens_only(lab_tokenizer):
    row = lab_rows(1, seed=3)[0]
    parsed = parse_trace(row["completion"], LabSegmenter())
    abl = ablation_sequences(lab_tokenizer, row["problem"], parsed, [1, 2], gold=row["answer"])
    gold_ids = lab_tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
    assert abl.target == "gold" and abl.scored_tokens == len(gold_ids) == 1
    box = lab_tokenizer("\\boxed{", add_special_tokens=False)["input_ids"]
    for seq in abl.sequences:  # ... \boxed{ <gold>: the closing "}" is not part of the sequence
        assert seq[-2:] == box + gold_ids
    assert len(abl.sequences) == 3
    assert [len(abl.sequences[0]) - len(s) for s in abl.sequences[1:]] == [
        len(parsed.steps[i].split()) for i in (1, 2)]  # word-level tokenizer: one token per word


def test_ablation_sequences_open_thinking_once_when_bpe_splits_the_marker():
    """R1-style template with a byte-level BPE in which "<think>" is eight tokens: not opened twice."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    backend.train_from_iterator(["the answer is 3 because 1 + 2 = 3"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}Assistant: <think>\n{% endif %}")
    assert len(tok("<think>\n", add_special_tokens=False)["input_ids"]) > 4
    parsed = parse_trace("<think>\n1 + 2 = 3\n\nWait, check: 3.\n</think>\n\nThe answer is \\boxed{3}",
                         ParagraphSegmenter())
    abl = ablation_sequences(tok, "What is 1 + 2?", parsed, [0], gold="3")
    assert tok.decode(abl.sequences[0]) == ("User: What is 1 + 2?\nAssistant: <think>\n1 + 2 = 3\n\n"
                                            "Wait, check: 3.\n</think>\n\nThe answer is \\boxed{3")


def reference_pir(model, tokenizer, problem, parsed, ablate, gold):
    """One unpadded forward pass per sequence with full logits: the definition, spelled out.

    Context = chat prompt + thinking (step removed) + the answer text up to its last \\boxed{;
    scored = the gold answer's tokens (with the blank that opened the box)."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": problem}], add_generation_prompt=True,
                                           tokenize=True)["input_ids"]
    box = parsed.answer.rfind("\\boxed{") + len("\\boxed{")
    lead_in = tokenizer(parsed.answer[:box], add_special_tokens=False)["input_ids"]
    blank = " " if parsed.answer[box:].startswith(" ") else ""
    gold_ids = tokenizer(blank + gold, add_special_tokens=False)["input_ids"]

    def nll(keep):
        ids = prompt + tokenizer(parsed.thinking_block(keep), add_special_tokens=False)["input_ids"] + lead_in + gold_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        a = len(gold_ids)
        return torch.nn.functional.cross_entropy(logits[-a - 1:-1], torch.tensor(ids[-a:])).item()

    full = nll(None)
    return {i: nll([j != i for j in range(len(parsed.steps))]) - full for i in ablate}


def tiny_model(tokenizer, arch: str = "qwen3"):
    """A random 2-layer decoder with grouped-query attention (4 query heads, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(1)
    cls, config_cls = (Qwen3ForCausalLM, Qwen3Config) if arch == "qwen3" else (LlamaForCausalLM, LlamaConfig)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    return cls(config).eval()


@pytest.fixture(scope="module")
def lab_model(untrained_lab_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(untrained_lab_dir).eval(), AutoTokenizer.from_pretrained(
        untrained_lab_dir)


@pytest.mark.parametrize("which", ["lab", "qwen3", "llama"])
def test_pir_modes_equal_the_definition(which, lab_model, lab_tokenizer):
    model, tokenizer = lab_model if which == "lab" else (tiny_model(lab_tokenizer, which), lab_tokenizer)
    for row in lab_rows(4, seed=3):
        parsed = parse_trace(row["completion"], LabSegmenter())
        ablate = list(range(len(parsed.steps)))
        seqs = ablation_sequences(tokenizer, row["problem"], parsed, ablate, gold=row["answer"]).sequences
        lengths = [len(s) for s in seqs]
        # budgets for several passes in both modes: padded batches of ~3 sequences, packs of ~2 suffixes
        budgets = {False: 3 * max(lengths), True: 2 * max(lengths)}
        assert len(_batches(lengths, budgets[False])) > 1
        prefixes = [common_prefix(seqs[0], s) for s in seqs[1:]]
        packs = _packs(prefixes, [n - p for n, p in zip(lengths[1:], prefixes, strict=True)], budgets[True])
        assert 1 < len(packs) < len(ablate)
        want = reference_pir(model, tokenizer, row["problem"], parsed, ablate, row["answer"])
        assert any(abs(v) > 1e-3 for v in want.values())  # the comparison is not trivially 0 == 0
        for reuse in (True, False):
            got, target = pir_scores(model, tokenizer, row["problem"], parsed, ablate, gold=row["answer"],
                                     max_batch_tokens=budgets[reuse], reuse_prefix=reuse)
            assert target == "gold" and got.keys() == want.keys()
            for i in ablate:
                assert got[i] == pytest.approx(want[i], abs=1e-4)


def test_prefix_reuse_covers_both_attention_branches(lab_model):
    """Suffixes longer than their shared prefix (early steps) and shorter ones (late steps) both occur."""
    model, tokenizer = lab_model
    row = lab_rows(1, seed=9)[0]
    parsed = parse_trace(row["completion"], LabSegmenter())
    abl = ablation_sequences(tokenizer, row["problem"], parsed, range(len(parsed.steps)), gold=row["answer"])
    ref, variants = abl.sequences[0], abl.sequences[1:]
    prefixes = [common_prefix(ref, v) for v in variants]
    assert any(len(v) - p > p for v, p in zip(variants, prefixes, strict=True))
    assert any(len(v) - p <= p for v, p in zip(variants, prefixes, strict=True))
    full, nll = shared_prefix_nll(model, ref, variants, abl.scored_tokens, pad_token_id=0)
    want = answer_nll(model, abl.sequences, abl.scored_tokens, pad_token_id=0, max_batch_tokens=0)
    assert [full, *nll] == pytest.approx(want, abs=1e-4)
    assert model.config._attn_implementation == "sdpa"  # restored after the packed passes


def test_models_that_post_process_logits_are_scored_by_their_own_forward(lab_model, caplog):
    """Gemma-2's final-logit soft-capping is invisible to the fast paths (base model + output head):
    the check against the model's own forward catches it and switches that model to full passes."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                          final_logit_softcapping=0.5, initializer_range=0.2, sliding_window=256, pad_token_id=0)
    gemma = Gemma2ForCausalLM(config).eval()
    ref = list(range(1, 60))
    variants = [ref[:10] + ref[15:], ref[:30] + ref[40:]]

    def by_hand(seq):
        with torch.no_grad():
            logits = gemma(torch.tensor([seq])).logits[0, -4:-1].double()
        return torch.nn.functional.cross_entropy(logits, torch.tensor(seq[-3:])).item()

    want = [by_hand(s) for s in (ref, *variants)]
    with caplog.at_level("WARNING", logger="effreason.pruning.nll"):
        full, rest = shared_prefix_nll(gemma, ref, variants, 3, pad_token_id=0)
        assert [full, *rest] == pytest.approx(want, abs=1e-6)
        assert answer_nll(gemma, [ref, *variants], 3, pad_token_id=0) == pytest.approx(want, abs=1e-6)
    assert sum("differs from the model's own forward" in r.message for r in caplog.records) == 2
    assert gemma._effreason_scoring_paths == {"prefix-reuse": False, "full-pass": False}
    # the lab model (Qwen3) passes the check: its fast paths stay on
    model, tokenizer = lab_model
    seq = tokenizer("start 1 ; s1 + 2 ; ( mod 11 )", add_special_tokens=False)["input_ids"]
    shared_prefix_nll(model, seq, [seq[:3] + seq[5:]], 2, pad_token_id=0)
    answer_nll(model, [seq], 2, pad_token_id=0)
    assert model._effreason_scoring_paths == {"prefix-reuse": True, "full-pass": True}


def test_only_the_gold_tokens_count(lab_model):
    """Text after the gold answer cannot change PIR; a different gold answer does."""
    model, tokenizer = lab_model
    row = lab_rows(1, seed=5)[0]
    parsed = parse_trace(row["completion"], LabSegmenter())
    assert row["completion"].endswith(" }")
    longer = parse_trace(row["completion"] + " ; yes , the answer is final", LabSegmenter())
    ablate = [i for i, label in enumerate(MarkerClassifier()([s.strip() for s in parsed.steps]))
              if is_functional(label)]
    base, _ = pir_scores(model, tokenizer, row["problem"], parsed, ablate, gold=row["answer"])
    other_gold = str((int(row["answer"]) + 1) % 11)
    changed, _ = pir_scores(model, tokenizer, row["problem"], parsed, ablate, gold=other_gold)
    assert base.keys() == changed.keys() and any(abs(base[i] - changed[i]) > 1e-4 for i in base)
    # the last \boxed{ moved, so compare with the lead-in that the longer answer produces
    fixed = " the answer is \\boxed{"
    a, _ = pir_scores(model, tokenizer, row["problem"], parsed, ablate, gold=row["answer"], answer_prefix=fixed)
    b, _ = pir_scores(model, tokenizer, row["problem"], longer, ablate, gold=row["answer"], answer_prefix=fixed)
    assert a == pytest.approx(b, abs=1e-6)
    no_gold, target = pir_scores(model, tokenizer, row["problem"], parsed, ablate)
    assert target == "boxed" and no_gold == pytest.approx(base, abs=1e-6)  # the lab trace boxed the gold


def test_time_pir_scoring_reports_all_modes(lab_model):
    model, tokenizer = lab_model
    out = time_pir_scoring(model, tokenizer, lab_rows(3, seed=5), segmenter=LabSegmenter())
    assert out["bench/max_abs_diff_prefix"] < 1e-4 and out["bench/max_abs_diff_batched"] < 1e-4
    assert out["bench/sequences"] > 3 and out["bench/tokens_prefix"] < out["bench/tokens_full"]
    assert all(out[f"bench/{m}_s"] > 0 for m in ("per_ablation", "batched", "prefix"))


# ---------------------------------------------------------------- pruning


@pytest.mark.parametrize(("n", "ratio", "k"), [(10, 0.3, 3), (10, 0.25, 2), (5, 0.5, 2), (1, 0.5, 0),
                                               (1, 1.0, 1), (7, 0.8, 5), (0, 0.8, 0), (4, 0.0, 0)])
def test_num_to_remove_rounds_down(n, ratio, k):
    assert num_to_remove(n, ratio) == k


def test_num_to_remove_rejects_bad_ratio():
    with pytest.raises(ValueError, match="ratio"):
        num_to_remove(3, 1.5)


def test_pir_pruning_removes_lowest_functional(lab_model):
    model, tokenizer = lab_model
    for row in lab_rows(6, seed=7):
        result = prune_trace(row["id"], row["problem"], row["completion"], tokenizer=tokenizer, model=model,
                             ratio=0.5, answer=row["answer"], segmenter=LabSegmenter())
        assert result.pir_target == "gold"
        functional = [s for s in result.steps if is_functional(s.label)]
        removed = [s for s in result.steps if s.removed]
        assert len(removed) == math.floor(0.5 * len(functional))
        assert all(is_functional(s.label) for s in removed)
        assert all(s.pir is not None for s in functional)
        assert all(s.pir is None for s in result.steps if not is_functional(s.label))
        kept_scores = [s.pir for s in functional if not s.removed]
        assert all(s.pir <= min(kept_scores) for s in removed)
        assert result.pruned_completion == " ".join(
            ["<think>"] + [s.text for s in result.steps if not s.removed]
            + ["</think>", row["completion"].split("</think> ")[1]])


def test_random_baseline_same_count_seeded_and_progressive_kept(lab_tokenizer):
    for row in lab_rows(20, seed=11):
        kw = dict(tokenizer=lab_tokenizer, ratio=0.6, method="random", segmenter=LabSegmenter())
        a = prune_trace(row["id"], row["problem"], row["completion"], seed=1, **kw)
        b = prune_trace(row["id"], row["problem"], row["completion"], seed=1, **kw)
        n_functional = sum(is_functional(s.label) for s in a.steps)
        assert sum(s.removed for s in a.steps) == num_to_remove(n_functional, 0.6)
        assert a == b
        assert not any(s.removed for s in a.steps if s.label == PROGRESSIVE)
    with pytest.raises(ValueError, match="scoring model"):
        prune_trace("x", "p", "<think> s1 1 + 1 = 2 ; </think> a", tokenizer=lab_tokenizer, ratio=0.5)


def test_full_pruning_gives_oracle_trace_and_still_grades(lab_tokenizer):
    grader = Grader("exact")
    no_errors = TraceStyle(check=0.9, error=0.0, final_check=0.9)
    for problem, trace in lab_traces(30, seed=2, style=no_errors):
        result = prune_trace("t", problem.text(), trace.text, tokenizer=lab_tokenizer, ratio=1.0,
                             method="random", segmenter=LabSegmenter())
        assert result.pruned_completion == oracle_trace(problem).text
    rows = lab_rows(30, seed=4)
    results, summary = prune_traces(rows, tokenizer=lab_tokenizer, ratio=1.0, method="random",
                                    segmenter=LabSegmenter())
    for row, result in zip(rows, results, strict=True):
        assert grader.grade(result.pruned_completion, row["answer"]).correct
        assert result.tokens_before == len(row["completion"].split())  # word-level lab tokenizer
        assert result.tokens_after == len(result.pruned_completion.split())
    before = sum(len(r["completion"].split()) for r in rows)
    after = sum(len(r.pruned_completion.split()) for r in results)
    assert summary["prune/tokens_before"] == before
    assert summary["prune/token_reduction"] == pytest.approx(1 - after / before)
    assert summary == summarize(results)
    assert summary["prune/steps_removed"] == summary["prune/steps_functional"] > 0


def test_r1_pruning_keeps_text_outside_removed_steps(lab_tokenizer):
    rows = load_traces(SAMPLES)
    results, _ = prune_traces(rows, tokenizer=lab_tokenizer, ratio=1.0, method="random")
    divisors = results[0].pruned_completion
    assert "Wait, let me double-check" not in divisors and "Alternatively" not in divisors
    assert divisors.startswith("<think>\nOkay, so I need to find the sum of all positive divisors of 36.")
    assert "7 * 13 = 91.\n\nSo the sum of the divisors of 36 is 91.\n</think>" in divisors
    assert divisors.endswith(split_thinking(rows[0]["completion"]).answer)


def test_batches_pack_longest_first_within_budget():
    assert _batches([5, 9, 7, 3], 20) == [[1, 2], [0, 3]]  # 2 x 9 = 18 <= 20; then 2 x 5 = 10
    assert _batches([5, 9, 7, 3], 0) == [[1], [2], [0], [3]]  # one sequence per pass
    assert _batches([30], 10) == [[0]]  # over budget: runs alone


def test_packs_keep_order_within_budget():
    # keys of a pass = longest prefix + summed suffixes: 10 + (8 + 6) = 24 <= 25; 10 + (14 + 20) > 25;
    # 4 + (20 + 3) = 27 > 25
    assert _packs([10, 8, 4, 2], [8, 6, 20, 3], 25) == [[0, 1], [2], [3]]
    assert _packs([10, 12], [8, 6], 0) == [[0], [1]]
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([1, 2], [1, 2, 3]) == 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bench_pir_script_runs_and_its_modes_agree(dtype, tmp_path):
    """The benchmark command itself (R1 samples, a random Qwen3): figures written, scores agree."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "eval" / "bench_pir.py"), "--setting", "r1", "--repeat", "1",
                           "--hidden-size", "64", "--layers", "2", "--dtype", dtype, "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["dtype"] == dtype and figures["agree"] and figures["traces"] == 5
    assert figures["tolerance"] == (1e-4 if dtype == "float32" else 5e-2)
    assert figures["tokens_full"] > figures["tokens_prefix"] > 0 and figures["prefix_s"] > 0
