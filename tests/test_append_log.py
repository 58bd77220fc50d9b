"""The one resumable append log behind eval's samples.jsonl and the prune output."""

import json

import pytest

from effreason.jsonl import AppendLog, DataError, read_append_log


def test_append_log_round_trip_and_torn_last_line_is_cut(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    with AppendLog(path) as log:
        log.write([{"id": "a"}, {"id": "b"}])
    with path.open("a") as f:
        f.write('{"id": "c", "tex')  # a kill mid-write
    rows, torn = read_append_log(path, check=lambda r: r["id"])
    assert [r["id"] for r in rows] == ["a", "b"] and torn
    assert "torn" in caplog.text
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'  # cut, so the next append starts a fresh line
    with AppendLog(path) as log:
        log.write([{"id": "c"}])
    assert [r["id"] for r in read_append_log(path)[0]] == ["a", "b", "c"]


@pytest.mark.parametrize("middle", ['not json', '{"text": "no id"}', '[1, 2]'])
def test_a_bad_row_before_the_last_is_an_error_and_the_file_is_kept(tmp_path, middle):
    path = tmp_path / "log.jsonl"
    original = json.dumps({"id": "a"}) + "\n" + middle + "\n" + json.dumps({"id": "b"}) + "\n"
    path.write_text(original)
    with pytest.raises(DataError, match=r"log.jsonl:2: unreadable row"):
        read_append_log(path, check=lambda r: r["id"])
    assert path.read_text() == original


def test_missing_log_is_empty(tmp_path):
    assert read_append_log(tmp_path / "none.jsonl") == ([], False)


def test_a_complete_last_row_that_fails_the_check_is_no_torn_line(tmp_path):
    """Only a kill leaves a line without its newline; a whole bad line was put there by someone else."""
    path = tmp_path / "log.jsonl"
    original = '{"id": "a"}\n{"note": "appended by hand"}\n'
    path.write_text(original)
    with pytest.raises(DataError, match=r"log.jsonl:2: unreadable row"):
        read_append_log(path, check=lambda r: r["id"])
    assert path.read_text() == original


def test_an_unterminated_last_row_is_torn_even_if_it_parses(tmp_path):
    """A kill can land just before a row's newline: the row is dropped (and redone), never glued to the next."""
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    assert read_append_log(path, check=lambda r: r["id"]) == ([{"id": "a"}], True)
    with AppendLog(path) as log:
        log.write([{"id": "b"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
