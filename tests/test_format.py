import pytest

from effreason.format import (
    chat_prompt,
    completion_in_context,
    count_completion_tokens,
    prompt_opens_thinking,
    split_thinking,
)
from effreason.jsonl import (
    DataError,
    atomic_directory,
    atomic_write,
    iter_jsonl,
    read_jsonl,
    require,
    write_jsonl,
)


@pytest.mark.parametrize(
    "text, thinking, answer, closed",
    [
        ("<think> a b </think> the answer is 3", "a b", " the answer is 3", True),
        ("a b </think> ans", "a b", " ans", True),  # template opened <think> in the prompt
        ("<think> x </think> y </think> z", "x </think> y", " z", True),  # last </think> wins
        ("<think> still thinking", "still thinking", None, False),  # truncated
        ("no tags, answer 5", "", "no tags, answer 5", False),
    ],
)
def test_split_thinking(text, thinking, answer, closed):
    split = split_thinking(text)
    assert (split.thinking, split.answer, split.closed) == (thinking, answer, closed)


R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 1+2?<｜Assistant｜><think>\n"  # DeepSeek-R1-Distill


@pytest.mark.parametrize("prompt, opened", [
    (R1_PROMPT, True),
    ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),  # Qwen3, enable_thinking=False
    ("<|im_start|>user 1 + 2 <|im_end|> <|im_start|>assistant ", False),  # the lab's template
    ("1 + 2", False),
])
def test_prompt_opens_thinking(prompt, opened):
    assert prompt_opens_thinking(prompt) is opened


def test_a_completion_cut_off_inside_thinking_the_prompt_opened_is_truncated_not_an_answer():
    from effreason.grading import Grader

    cut = "Two bolts of blue, half as much white: 2 + 1 = 3"  # no marker at all: the prompt opened <think>
    assert split_thinking(completion_in_context(R1_PROMPT, cut)) == split_thinking("<think>" + cut)
    assert split_thinking(completion_in_context(R1_PROMPT, cut)).answer is None
    closed = "2 + 1 = 3</think>\n\\boxed{3}"
    assert split_thinking(completion_in_context(R1_PROMPT, closed)) == split_thinking(closed)
    assert completion_in_context("1 + 2", cut) == cut and completion_in_context(None, cut) == cut
    with Grader("math", last_number_fallback=True) as grader:  # GSM8K's grading: the last number would pass
        assert grader.grade(cut, "3").correct
        assert grader.grade(completion_in_context(R1_PROMPT, cut), "3").reason == "truncated"


def test_chat_prompt_instruction_and_system():
    msgs = chat_prompt("1+1?", instruction="Box it.", system_prompt="Be brief.")
    assert msgs == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?\nBox it."}]
    assert chat_prompt("q") == [{"role": "user", "content": "q"}]


def test_count_completion_tokens_stops_at_first_eos_and_ignores_padding():
    assert count_completion_tokens([5, 6, 3, 0, 0], eos_token_ids=3, pad_token_id=0) == 3
    assert count_completion_tokens([5, 6, 7], eos_token_ids=[3, 9]) == 3
    assert count_completion_tokens([5, 6, 0, 0], eos_token_ids=3, pad_token_id=0) == 2
    assert count_completion_tokens([9, 3], eos_token_ids=[3, 9]) == 1


def test_jsonl_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2, "b": "x"}\n{bad json\n')
    rows = iter_jsonl(path)
    line, row = next(rows)
    assert line == 1
    with pytest.raises(DataError, match="b") as err:
        require(row, "b", path, line)
    assert f"{path}:1" in str(err.value)
    line, row = next(rows)
    assert line == 3 and require(row, "b", path, line, str) == "x"
    with pytest.raises(DataError, match="expected str"):
        require(row, "a", path, line, str)
    with pytest.raises(DataError, match=rf"{path.name}:4: invalid JSON"):
        next(rows)
    with pytest.raises(DataError, match="expected a JSON object"):
        (tmp_path / "list.jsonl").write_text("[1, 2]\n")
        read_jsonl(tmp_path / "list.jsonl")


def test_atomic_write_leaves_original_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"x": 1}])
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert read_jsonl(path) == [{"x": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_atomic_directory_replaces_only_on_success(tmp_path):
    out = tmp_path / "sub" / "model"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_directory(out, replace=True) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("killed mid-save")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the earlier folder is intact
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no temp folder left behind
    with pytest.raises(FileExistsError, match="not empty"):  # a folder it was not told is its own
        with atomic_directory(out) as tmp:
            pass
    with atomic_directory(out, replace=True) as tmp:
        (tmp / "c.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]  # replaced whole, not merged
