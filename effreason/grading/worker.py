"""Sandbox worker process: answers math-equivalence requests as JSON lines on stdin/stdout.

Started by ``effreason.grading.sandbox`` as ``python -m effreason.grading.worker --memory-mb N``.
Protocol (one JSON object per line):

- on start, after importing math-verify: ``{"ready": true, "pid": ...}``
- request ``{"id": 7, "pred": "...", "gold": "...", "cpu_s": 15}`` -> ``{"id": 7, "equal": true}``
  or ``{"id": 7, "error": "..."}``.

The parent enforces the real time limit by killing this process. As a backstop for a worker whose
parent died while it was stuck in a computation, each request also lowers ``RLIMIT_CPU`` to the
CPU time used so far plus ``cpu_s``: the kernel ends the process when that runs out. Address space
is capped (``--memory-mb``) so a runaway expression fails with ``MemoryError`` instead of
exhausting the machine. The process exits when stdin closes.

Test hooks (``{"op": "sleep"}``, ``{"op": "crash"}``) exist only when the environment variable
``EFFREASON_GRADING_TEST_HOOKS=1`` is set; they exercise the kill-and-restart paths.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from effreason.grading.equivalence import math_equal, warm_up

TEST_HOOKS_ENV = "EFFREASON_GRADING_TEST_HOOKS"


def _limit_memory(memory_mb: int) -> None:
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _no_core_dumps() -> None:
    # RLIMIT_CPU ends a runaway worker with SIGXCPU, whose default action would write a core file.
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def _limit_cpu(cpu_s: float) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime + cpu_s) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _handle(request: dict, test_hooks: bool) -> dict:
    reply: dict = {"id": request.get("id")}
    op = request.get("op", "math")
    if op == "math":
        pred, gold = request.get("pred"), request.get("gold")
        if not isinstance(pred, str) or not isinstance(gold, str):
            reply["error"] = "request needs string fields 'pred' and 'gold'"
        else:
            reply["equal"] = math_equal(pred, gold)
    elif test_hooks and op == "sleep":
        time.sleep(float(request.get("seconds", 0)))
        reply["equal"] = False
    elif test_hooks and op == "crash":
        os._exit(3)
    else:
        reply["error"] = f"unknown op {op!r}"
    return reply


def serve(memory_mb: int) -> None:
    """Run the request loop until stdin closes."""
    # Keep the protocol channel private: anything a library prints goes to stderr instead.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _limit_memory(memory_mb)
    _no_core_dumps()
    test_hooks = os.environ.get(TEST_HOOKS_ENV) == "1"
    warm_up()
    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    protocol.flush()
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            _limit_cpu(float(request.get("cpu_s", 60)))
            reply = _handle(request, test_hooks)
        except MemoryError:
            reply = {"id": request_id, "error": "out of memory"}
        except Exception as e:  # a bad request or a math-verify bug must not end the worker
            reply = {"id": request_id, "error": f"{type(e).__name__}: {e}"[:500]}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space cap (0: none)")
    serve(parser.parse_args(argv).memory_mb)


if __name__ == "__main__":
    main()
