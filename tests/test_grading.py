"""The grader: extraction, normalisation, exact and math modes, hostile inputs, sandbox recovery,
threads and daemonic multiprocessing workers, and the gold solutions of GSM8K and MATH-500."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from effreason.benchmarks import BENCHMARKS, load_benchmark
from effreason.grading import Grader, GradeResult, answer_key, extract_answer, grade
from effreason.grading import grader as grader_module
from effreason.grading.equivalence import MAX_ANSWER_CHARS
from effreason.grading.extract import clean_answer
from effreason.grading.sandbox import SandboxPool, WorkerError, WorkerTimeout
from effreason.grading.worker import TEST_HOOKS_ENV

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR = Path(os.environ.get("EFFREASON_BENCHMARKS_DIR", REPO.parent / "shared" / "data" / "benchmarks"))
needs_data = pytest.mark.skipif(
    not BENCHMARKS_DIR.is_dir(),
    reason=f"benchmark copies not found at {BENCHMARKS_DIR} (set EFFREASON_BENCHMARKS_DIR)",
)
# A worker start (import sympy + math-verify) takes about a second; timing assertions allow for it.
START_ALLOWANCE_S = 10.0


@pytest.fixture(scope="module")
def math_grader():
    with Grader("math", timeout_s=5.0) as grader:
        yield grader


@pytest.fixture(scope="module")
def exact_grader():
    with Grader("exact") as grader:
        yield grader


# --- extraction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think> s1 7 + 5 = 1 ; </think> the answer is \\boxed{ 7 }", "7"),
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("first \\boxed{3}, then \\boxed{4}", "4"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\boxed{5}}", "5"),
        ("\\boxed{\\boxed{1} + 1}", "\\boxed{1} + 1"),
        ("the result is \\boxed 5 indeed", "5"),
        ("\\fbox{12}", "12"),
        ("\\boxed{\\text{(C)}}", "(C)"),
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{10,\\!080}", "10080"),
        ("\\boxed{\\$32,\\!348}", "32348"),
        # a box still open at the end: cut off inside the answer, so no answer at all
        ("\\boxed{3} and later \\boxed{4", None),
        ("the answer is \\boxed{7", None),
        ("the answer is \\boxed{7 + 1", None),
        ("The answer is 7. \\boxed{", None),
        ("The answer is 7. \\boxed", None),
        ("#### 7 \\boxed{8", None),
        ("\\boxed{8 \\boxed{7}", None),
        ("\\boxed{\\{1, 2\\}", None),  # escaped braces never close a box
        ("{ \\boxed{7}", "7"),  # an open brace that is not a box's does not count
        ("\\boxed{7}}", "7"),  # a stray closing brace after a closed box is ignored
        ("\\boxed{}", None),
        ("The answer is 7. \\boxed{}", None),  # the (empty) box wins over the anchor
        ("the answer is 7 or 8", "7 or 8"),
        ("İİ The answer is 17.", "17"),  # "İ".lower() is two characters: must not shift the anchor
        ("THE ANSWER IS 17.", "17"),
        ("The answer is 42.", "42"),
        ("So the final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("The answer is: **17**", "17"),
        ("The answer is\n\n$5$", "5"),
        ("Natalia sold 48/2 = 24 clips.\n#### 1,234", "1234"),
        ("no anchors, just 5 and 6", None),
        ("", None),
        ("<think> never closed \\boxed{5}", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize("mode", ["exact", "math"])
@pytest.mark.parametrize(
    ("completion", "gold", "reason"),
    [
        # unclosed boxes are no answer, whatever math-verify would make of them
        ("the answer is \\boxed{7", "7", "no_answer"),
        ("the answer is \\boxed{7 + 1", "8", "no_answer"),
        ("the answer is \\fbox{7", "7", "no_answer"),
        ("The answer is 7. \\boxed{", "7", "no_answer"),
        # digits are ASCII only: full-width, Arabic-Indic, mathematical bold, Devanagari, mixed
        ("\\boxed{１７}", "17", "wrong"),
        ("\\boxed{١٧}", "17", "wrong"),
        ("\\boxed{1٧}", "17", "wrong"),
        ("\\boxed{1７}", "17", "wrong"),
        ("\\boxed{𝟏𝟕}", "17", "wrong"),
        ("\\boxed{१७}", "17", "wrong"),
        ("\\boxed{１７}", "１７", "correct"),  # written the same way as the gold
        ("\\boxed{17}", "１７", "wrong"),
        ("\\boxed{3²}", "32", "wrong"),  # no NFKC, which would make this "32"
        # several boxes: the last one is the answer
        ("\\boxed{7} or \\boxed{8}", "7", "wrong"),
        ("\\boxed{7} or \\boxed{8}", "8", "correct"),
        ("\\boxed{}", "7", "no_answer"),
        ("\\boxed{7}}", "7", "correct"),
        ("\\boxed{\\boxed{7}}", "7", "correct"),
        # an answer only inside the thinking is no answer
        ("<think> \\boxed{7} </think>", "7", "no_answer"),
        ("<think> \\boxed{7} </think> see above", "7", "no_answer"),
        ("<think> a </think> <think> \\boxed{7}", "7", "no_answer"),  # reopened, never closed
        ("<think> a </think> The answer is 7. <think> or 8", "7", "no_answer"),
        # hedged answers match nothing
        ("the answer is 7 or 8", "7", "wrong"),
        ("the answer is 7 or 8", "8", "wrong"),
        ("\\boxed{7\\text{ or }8}", "7", "wrong"),
        ("\\boxed{7\\text{ or }8}", "8", "wrong"),
        ("\\boxed{7, 8}", "7", "wrong"),
        ("İİ The answer is 17.", "7", "wrong"),
        # number spellings
        ("\\boxed{007}", "7", "correct"),
        ("\\boxed{7.0}", "7", "correct"),
        ("\\boxed{+7}", "7", "correct"),
        ("\\boxed{-7}", "7", "wrong"),
        ("\\boxed{7.0000001}", "7", "wrong"),
        ("\\boxed{" + "0" * 3000 + "7}", "7", "correct"),
        ("\\boxed{" + "7" * 4001 + "}", "7", "wrong"),
        ("\\boxed{" + "7" * 5000 + "}", "7" * 5000, "correct"),
        ("\\boxed{1,000}", "1000", "correct"),
        ("\\boxed{1000}", "1,000", "correct"),
        ("\\boxed{1,00}", "100", "wrong"),
        ("\\boxed{3,5}", "3.5", "wrong"),
        ("\\boxed{nan}", "7", "wrong"),
        ("\\boxed{\\infty}", "7", "wrong"),
        ("\\boxed{\\infty}", "\\infty", "correct"),
        ("\\boxed{\\frac{0}{0}}", "7", "wrong"),
        ("\\boxed{(-\\infty, \\infty)}", "7", "wrong"),
        # math delimiters
        ("so $7$", "7", "no_answer"),
        ("The answer is $7$.", "7", "correct"),
        ("\\boxed{$7$}", "7", "correct"),
    ],
)
def test_lenient_and_hostile_answers_grade_the_same_in_both_modes(request, mode, completion, gold, reason):
    # The decisions of effreason.grading.extract's docstring; "math" mode must not undo any of them.
    result = request.getfixturevalue(f"{mode}_grader").grade(completion, gold)
    assert result.reason == reason
    assert result.correct is (reason == "correct")


def test_only_ascii_digits_are_digits():
    # int() and \d accept any Unicode decimal digit; the grader must not (int("1٧") == 17).
    assert int("1٧") == 17
    assert answer_key("007") == "7"
    assert answer_key("٠٠7") == "٠٠7"
    assert answer_key("１７.０") == "１７.０"
    assert answer_key("1,٠٠٠") == "1,٠٠٠"
    assert extract_answer("she has ١٧ apples", last_number_fallback=True) is None
    assert extract_answer("she has 1٧ apples", last_number_fallback=True) == "1"
    assert extract_answer("she has １７ apples", last_number_fallback=True) is None


def test_extract_answer_last_number_fallback():
    assert extract_answer("she has 5 apples and 1,250 pears.") is None
    assert extract_answer("she has 5 apples and 1,250 pears.", last_number_fallback=True) == "1250"
    assert extract_answer("it costs -3.5 dollars", last_number_fallback=True) == "-3.5"
    # anchors still win over the fallback
    assert extract_answer("\\boxed{2} then 9", last_number_fallback=True) == "2"


def test_thinking_is_stripped_before_extraction():
    completion = "<think> maybe \\boxed{1} </think> the answer is \\boxed{ 2 }"
    assert extract_answer(completion) == "2"
    assert extract_answer("<think> only \\boxed{1} </think> no answer here") is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("007", "7", True),
        ("27.0", "27", True),
        ("0.50", ".5", True),
        ("-0", "0", True),
        ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
        ("\\left(1,2\\right)", "(1, 2)", True),
        ("30^\\circ", "30", True),
        ("5\\text{ cm}", "5 cm", True),
        ("\\pi  r^2", "\\pi r^2", True),
        ("\\frac {1} { 2 }", "\\frac{1}{2}", True),
        ("\\bigl(1, 2\\bigr)", "(1,2)", True),
        ("1 2", "12", False),  # blanks between digits separate numbers
        ("a \\leftarrow b", "a \\rightarrow b", False),  # only sizing \left / \right are dropped
        ("$1,000$.", "1000", True),
        ("1,2", "12", False),
        ("7", "8", False),
        ("\\frac{1}{2}", "0.5", False),  # only math mode knows these are equal
    ],
)
def test_answer_key(a, b, same):
    assert (answer_key(a) == answer_key(b)) is same


def test_clean_answer_keeps_latex_that_is_not_a_wrapper():
    assert clean_answer("\\text{A} and \\text{B}") == "\\text{A} and \\text{B}"
    assert clean_answer("  \\text{ east } ") == "east"


# --- exact mode ------------------------------------------------------------------------------------


def test_exact_mode_lab_completions():
    with Grader("exact") as grader:
        assert grader.grade("<think> s1 7 + 5 = 1 ; </think> the answer is \\boxed{ 7 }", "7") == GradeResult(
            True, "7", "correct")
        assert grader.grade("</think> the answer is \\boxed{ 07 }", " 7 ") == GradeResult(True, "07", "correct")
        assert grader.grade("</think> the answer is \\boxed{ 8 }", "7") == GradeResult(False, "8", "wrong")
        assert grader.grade("<think> s1 7 + 5 = 1 ;", "7") == GradeResult(False, None, "truncated")
        assert grader.grade("</think> I give up", "7") == GradeResult(False, None, "no_answer")
        # exact mode never asks math-verify, so equal values in other spellings are wrong
        assert grader.grade("\\boxed{0.5}", "\\frac{1}{2}").reason == "wrong"
        assert grader._pool is None


def test_grade_batch_checks_lengths():
    with Grader("exact") as grader:
        with pytest.raises(ValueError, match="2 completions but 1 golds"):
            grader.grade_batch(["\\boxed{1}", "\\boxed{2}"], ["1"])
        assert [r.correct for r in grader.grade_batch(["\\boxed{1}", "\\boxed{2}"], ["1", "1"])] == [True, False]


def test_grader_rejects_bad_options():
    with pytest.raises(ValueError, match="mode"):
        Grader("fuzzy")
    with pytest.raises(ValueError, match="timeout_s"):
        Grader(timeout_s=0)
    with pytest.raises(ValueError, match="num_workers"):
        Grader(num_workers=0)


# --- math mode -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "correct"),
    [
        ("\\boxed{0.5}", "\\frac{1}{2}", True),
        ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", True),
        ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("\\boxed{C}", "\\text{(C)}", True),
        ("\\boxed{0.1}", "10\\%", True),
        ("\\boxed{[2, 5)}", "[2,5)", True),
        ("\\boxed{30}", "30^\\circ", True),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\sqrt{2}/2", True),
        ("\\boxed{-q + p}", "p - q", True),
        ("The answer is $\\frac{2}{4}$.", "\\frac{1}{2}", True),
        ("\\boxed{7+1}", "8", True),  # math mode compares values, not spellings ("exact": wrong)
        ("\\boxed{−7}", "-7", True),  # math-verify reads the Unicode minus sign ("exact": wrong)
        ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", False),
        ("\\boxed{[2, 5]}", "[2,5)", False),
        ("\\boxed{x}", "y", False),
    ],
)
def test_math_mode_equivalence(math_grader, pred, gold, correct):
    result = math_grader.grade(pred, gold)
    assert result.correct is correct
    assert result.reason == ("correct" if correct else "wrong")


def test_math_mode_truncated_and_no_answer(math_grader):
    assert math_grader.grade("<think> \\boxed{1}", "1") == GradeResult(False, None, "truncated")
    assert math_grader.grade("</think> hmm", "1") == GradeResult(False, None, "no_answer")


def test_overlong_answers_are_wrong_without_parsing(math_grader):
    long_answer = "1+" * MAX_ANSWER_CHARS + "1"
    start = time.monotonic()
    assert math_grader.grade(f"\\boxed{{{long_answer}}}", "2") == GradeResult(False, long_answer, "wrong")
    assert time.monotonic() - start < 1.0


def test_module_level_grade_reuses_one_grader():
    first = grade("\\boxed{2}", "2", mode="exact")
    assert first == GradeResult(True, "2", "correct")
    key = ("exact", 5.0, False)
    grader = grader_module._DEFAULT_GRADERS[key]
    assert grade("\\boxed{3}", "2", mode="exact").reason == "wrong"
    assert grader_module._DEFAULT_GRADERS[key] is grader


# --- hostile inputs --------------------------------------------------------------------------------


def test_code_payloads_are_never_executed(tmp_path, math_grader):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"eval(\"__import__('os').system('touch {marker}')\")",
        f"exec('import os; os.system(\"touch {marker}\")')",
        f"(lambda: __import__('os').system('touch {marker}'))()",
    ]
    completions = []
    for payload in payloads:
        completions += [f"\\boxed{{{payload}}}", f"The answer is {payload}", f"#### {payload}", payload]
    golds = ["1"] * len(completions)
    results = math_grader.grade_batch(completions, golds)
    results += [math_grader.grade("\\boxed{1}", payload) for payload in payloads]
    results += [grade(c, "1", mode="exact", last_number_fallback=True) for c in completions]
    assert not marker.exists()
    assert not any(r.correct for r in results)
    assert {r.reason for r in results} <= {"wrong", "no_answer"}


def test_huge_power_times_out_within_limit_and_worker_recovers():
    with Grader("math", timeout_s=1.0) as grader:
        assert grader.grade("\\boxed{2}", "2").correct  # fast path, no worker yet
        assert grader.grade("\\boxed{0.5}", "\\frac{1}{2}").correct  # starts the worker
        pid_before = grader._pool.worker_pids()[0]
        start = time.monotonic()
        result = grader.grade("\\boxed{9^{9^{9^9}}}", "1")
        elapsed = time.monotonic() - start
        assert result == GradeResult(False, "9^{9^{9^9}}", "timeout")
        assert elapsed < 1.0 + 2.0  # the limit, plus killing and respawning (not waiting for it)
        assert grader._pool.worker_pids()[0] != pid_before
        assert grader.grade("\\boxed{0.5}", "\\frac{1}{2}") == GradeResult(True, "0.5", "correct")


def test_deep_nesting_and_megabyte_inputs_are_fast(math_grader):
    depth = 10_000
    cases = [
        ("\\boxed{" + "{" * depth + "1" + "}" * depth + "}", "1"),
        ("\\boxed{" + "(" * depth + "1" + ")" * depth + "}", "1"),
        ("\\boxed{" + "[" * depth + "1" + "]" * depth + "}", "1"),
        ("\\boxed{" * depth + "1" + "}" * depth, "1"),  # unwrapped to "1": correct
        ("{" * depth + "\\boxed{" * depth, "1"),  # never closed
        ("x" * 1_000_000 + " \\boxed{7}", "7"),
        ("{" * 1_000_000, "1"),
        ("\\boxed{" + "x" * 1_000_000 + "}", "1"),
        ("9" * 1_000_000, "1"),
        ("\\boxed{" + "(" * 12 + "1" + ")" * 12 + "}", "1"),  # short, but too deep for the parser
    ]
    start = time.monotonic()
    results = math_grader.grade_batch([c for c, _ in cases], [g for _, g in cases])
    elapsed = time.monotonic() - start
    assert [r.reason for r in results[:3]] == ["wrong"] * 3
    assert results[3] == GradeResult(True, "1", "correct")
    assert results[4] == GradeResult(False, None, "no_answer")
    assert results[5] == GradeResult(True, "7", "correct")
    assert results[6].reason == "no_answer"
    # the box opens before the searched tail window (TAIL_WINDOW_CHARS), so it is not seen
    assert results[7].reason == "no_answer"
    assert results[8].reason == "no_answer"
    assert results[9] == GradeResult(False, "(" * 12 + "1" + ")" * 12, "wrong")
    # under 1 s on a quiet machine; the bound catches a quadratic or hanging path (minutes on 1 MB), not noise
    # (6 s was seen with the machine at load 10)
    assert elapsed < 20.0
    with Grader("exact", last_number_fallback=True) as with_fallback:
        start = time.monotonic()
        assert with_fallback.grade("9" * 1_000_000, "1").reason == "wrong"
        assert time.monotonic() - start < 10.0
    assert math_grader.grade("\\boxed{\\frac{2}{4}}", "0.5").correct  # the worker still answers


def test_sleep_hook_exercises_kill_and_restart(monkeypatch):
    monkeypatch.setenv(TEST_HOOKS_ENV, "1")
    pool = SandboxPool(1)
    try:
        assert pool.request({"op": "math", "pred": "1", "gold": "1"}, 5.0)["equal"] is True
        first_pid = pool.worker_pids()[0]
        start = time.monotonic()
        with pytest.raises(WorkerTimeout):
            pool.request({"op": "sleep", "seconds": 60}, 0.5)
        assert time.monotonic() - start < 0.5 + 2.0
        second_pid = pool.worker_pids()[0]
        assert second_pid != first_pid
        with pytest.raises(OSError):
            os.kill(first_pid, 0)  # the timed-out worker is gone (killed and reaped)
        assert pool.request({"op": "math", "pred": "\\frac{1}{2}", "gold": "0.5"}, 5.0)["equal"] is True
        with pytest.raises(WorkerError):
            pool.request({"op": "crash"}, 5.0)
        assert pool.worker_pids()[0] not in (None, second_pid)
        assert pool.request({"op": "math", "pred": "2", "gold": "3"}, 5.0)["equal"] is False
    finally:
        pool.close()
    assert pool.worker_pids() == [None]


def test_hooks_are_disabled_without_the_environment_variable(monkeypatch):
    monkeypatch.delenv(TEST_HOOKS_ENV, raising=False)
    pool = SandboxPool(1)
    try:
        start = time.monotonic()
        reply = pool.request({"op": "sleep", "seconds": 60}, 5.0)
        assert "unknown op" in reply["error"]
        assert time.monotonic() - start < START_ALLOWANCE_S  # a worker start, but no 60 s sleep
    finally:
        pool.close()


def test_batch_survives_timeouts_and_crashes(monkeypatch):
    monkeypatch.setenv(TEST_HOOKS_ENV, "1")
    with Grader("math", timeout_s=1.0, num_workers=2) as grader:
        completions = ["\\boxed{9^{9^{9^9}}}", "\\boxed{0.5}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{\\frac{1}{3}}"]
        golds = ["1", "\\frac{1}{2}", "2", "\\frac{1}{3}"]
        start = time.monotonic()
        results = grader.grade_batch(completions, golds)
        assert [r.reason for r in results] == ["timeout", "correct", "timeout", "correct"]
        assert time.monotonic() - start < 2 * 1.0 + START_ALLOWANCE_S
        pool = grader._sandbox()
        real_request = pool.request
        monkeypatch.setattr(pool, "request", lambda payload, timeout_s: real_request({"op": "crash"}, timeout_s))
        assert grader.grade("\\boxed{0.5}", "\\frac{1}{2}") == GradeResult(False, "0.5", "error")
        monkeypatch.setattr(pool, "request", real_request)
        assert [r.reason for r in grader.grade_batch(completions[1:2] * 4, golds[1:2] * 4)] == ["correct"] * 4
        with pytest.raises(ValueError, match="exceeds"):
            pool.request({"pred": "1" * 100_000, "gold": "1"}, 1.0)


# --- threads and processes -------------------------------------------------------------------------


def test_grading_from_threads(math_grader):
    results: dict[int, GradeResult] = {}

    def work(i: int) -> None:
        results[i] = math_grader.grade(f"\\boxed{{\\frac{{{i}}}{{2}}}}", str(i / 2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == list(range(1, 9))
    assert all(r.correct for r in results.values())


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_grading_inside_daemonic_pool_workers(start_method):
    # The parent uses the shared module-level grader first, so a forked child inherits live workers
    # it must not use.
    assert grade("\\boxed{0.5}", "\\frac{1}{2}", timeout_s=1.0).correct
    context = multiprocessing.get_context(start_method)
    args = [("\\boxed{0.5}", "\\frac{1}{2}"), ("\\boxed{0.25}", "\\frac{1}{2}"), ("\\boxed{9^{9^{9^9}}}", "1")]
    with context.Pool(1) as pool:
        results = pool.starmap(_grade_with_small_timeout, args, chunksize=1)
    assert [r.reason for r in results] == ["correct", "wrong", "timeout"]
    assert grade("\\boxed{\\frac{3}{6}}", "0.5", timeout_s=1.0).correct  # the parent's workers still work


def _grade_with_small_timeout(completion: str, gold: str) -> GradeResult:
    assert multiprocessing.current_process().daemon
    return grade(completion, gold, timeout_s=1.0)


# --- gold solutions of real benchmarks -------------------------------------------------------------


@needs_data
def test_gsm8k_gold_solutions_grade_correct():
    data = load_benchmark("gsm8k", data_dir=BENCHMARKS_DIR)
    spec = BENCHMARKS["gsm8k"]
    with Grader(spec.grading_mode, last_number_fallback=spec.last_number_fallback) as grader:
        results = grader.grade_batch(data["solution"], data["answer"])
    accuracy = sum(r.correct for r in results) / len(results)
    assert len(results) == 1319
    assert accuracy >= 0.995


@needs_data
def test_math500_gold_solutions_grade_correct():
    data = load_benchmark("math500", data_dir=BENCHMARKS_DIR)
    with Grader("math", num_workers=2) as grader:
        results = grader.grade_batch(data["solution"], data["answer"])
    accuracy = sum(r.correct for r in results) / len(results)
    assert len(results) == 500
    assert accuracy >= 0.99


@needs_data
def test_math500_golds_through_math_verify_alone():
    """The fast path hides math-verify on gold-vs-gold; here items go to a worker (every 5th item, to
    keep the test short; ``eval/check_grader.py`` runs all 500)."""
    data = load_benchmark("math500", data_dir=BENCHMARKS_DIR)
    data = data.select(range(0, len(data), 5))
    pool = SandboxPool(1)
    try:
        agreed = [pool.request({"pred": extract_answer(row["solution"]), "gold": clean_answer(row["answer"])},
                               10.0).get("equal") is True for row in data]
    finally:
        pool.close()
    assert len(agreed) == 100
    assert sum(agreed) / len(agreed) >= 0.99
