"""The rules every output follows (effreason.outputs, effreason.jsonl): ours or refused, one run at a
time, inputs never outputs, no temp files left by a killed write, the user's permissions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from effreason.jsonl import atomic_directory, atomic_write, write_json
from effreason.outputs import (
    ConfigMismatchError,
    OutputExistsError,
    OutputInUseError,
    claim_output,
    files_fingerprint,
    output_lock,
    refuse_input_as_output,
    weights_fingerprint,
)

REPO = Path(__file__).resolve().parents[1]


def test_claim_marks_refuses_and_resumes(tmp_path):
    rows = tmp_path / "o.jsonl"
    manifest, summary = tmp_path / "o.jsonl.config.json", tmp_path / "o.jsonl.summary.json"
    claim = dict(command="effreason prune", hint="use a new --output")
    assert not claim_output(manifest, rows, [summary], {"ratio": 0.5}, **claim)
    rows.write_text('{"id": "a"}\n')
    assert claim_output(manifest, rows, [summary], {"ratio": 0.5}, **claim)
    with pytest.raises(ConfigMismatchError, match=r"\(ratio: 0.5 -> 0.9\); use a new --output") as e:
        claim_output(manifest, rows, [summary], {"ratio": 0.9}, **claim)
    assert e.value.differences == {"ratio": (0.5, 0.9)}
    with pytest.raises(OutputExistsError, match="not written by `effreason eval`"):  # another command's manifest
        claim_output(manifest, rows, [summary], {"ratio": 0.5}, command="effreason eval")
    assert not claim_output(manifest, rows, [summary], {"ratio": 0.9}, overwrite=True, **claim)
    assert not rows.exists()


def test_input_as_output_is_refused_through_links_and_relative_paths(tmp_path, monkeypatch):
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(data)
    monkeypatch.chdir(tmp_path)
    for given in ("in.jsonl", "./in.jsonl", "link.jsonl", str(tmp_path / "sub" / ".." / "in.jsonl")):
        with pytest.raises(OutputExistsError, match="is also the output"):
            refuse_input_as_output({"--input": given}, ["out.jsonl", data])
    with pytest.raises(OutputExistsError, match="inside the output folder"):
        refuse_input_as_output({"--input": "in.jsonl"}, [tmp_path])
    refuse_input_as_output({"--input": "org/hub-id", "--data": None}, ["out.jsonl"])  # not a local file: fine


def test_a_live_lock_holder_is_named_and_a_dead_ones_lock_is_taken_over(tmp_path, lock_holder, caplog):
    lock = tmp_path / ".o.jsonl.lock"
    holder = lock_holder(lock)
    with pytest.raises(OutputInUseError, match=rf"another run \(pid {holder.pid} on .*lock file: {lock}"):
        with output_lock(lock, "the output o.jsonl"):
            pass
    holder.kill()  # kill -9: the lock file stays, naming a dead process
    holder.wait()
    assert json.loads(lock.read_text())["pid"] == holder.pid
    with output_lock(lock, "the output o.jsonl"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with output_lock(lock, "the output o.jsonl"):  # re-entered by the process that holds it
            pass
        assert lock.exists()
    assert f"taking over the lock of an earlier run that ended without releasing it (pid {holder.pid}" in caplog.text
    assert not lock.exists()  # released on exit


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    lock = tmp_path / ".lock"
    with pytest.raises(RuntimeError):
        with output_lock(lock, "x"):
            raise RuntimeError("boom")
    assert not lock.exists()
    with output_lock(lock, "x"):
        pass


def _killed_write(path: Path, directory: bool = False) -> None:
    """A process killed in the middle of an atomic write of ``path``."""
    body = ("with atomic_directory(sys.argv[1]) as d:\n    (d / 'a').write_text('half')\n    os._exit(9)" if directory
            else "with atomic_write(sys.argv[1]) as f:\n    f.write('half')\n    f.flush()\n    os._exit(9)")
    code = "import os, sys\nfrom effreason.jsonl import atomic_directory, atomic_write\n" + body
    subprocess.run([sys.executable, "-c", code, str(path)], env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_killed_writes_temp_files_are_removed_by_the_next_write(tmp_path):
    path, folder = tmp_path / "results.json", tmp_path / "ds"
    _killed_write(path)
    _killed_write(folder, directory=True)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2 and all(".tmp-" in name for name in leftovers)
    (tmp_path / ".results.json.bak").write_text("a user's file, not a leftover")
    write_json(path, {"ok": True})
    with atomic_directory(folder) as tmp:
        (tmp / "a").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".results.json.bak", "ds", "results.json"]


def test_outputs_get_the_users_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "new.json", {})
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("x")
        old_output = tmp_path / "old.json"  # as written by mkstemp before
        old_output.write_text("{}")
        old_output.chmod(0o600)
        with atomic_write(old_output) as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640  # 0666 less the umask (mkstemp made 0600)
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o750
    assert old_output.stat().st_mode & 0o777 == 0o640


def test_weights_fingerprint_sees_changed_bytes_and_names_hub_ids(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * (3 << 20))
    (tmp_path / "config.json").write_text("{}")
    before = files_fingerprint(tmp_path)
    with (tmp_path / "model.safetensors").open("r+b") as f:
        f.seek((3 << 20) - 10)
        f.write(b"changed")  # in the last MiB: hashed
    assert files_fingerprint(tmp_path) != before
    assert weights_fingerprint(tmp_path) == files_fingerprint(tmp_path)
    assert weights_fingerprint("no-such-org/no-such-model") == "no-such-org/no-such-model@unknown revision"
    assert weights_fingerprint(None) is None
