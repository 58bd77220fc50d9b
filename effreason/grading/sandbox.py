"""Long-lived worker processes that run math checks under a hard time limit.

Why processes and not ``signal.alarm`` (math-verify's own timeout): alarms only work in the main
thread of the main interpreter, so they fail in trainer threads, and they cannot interrupt a
computation stuck inside C code (a huge ``9^{9^{9^9}}``). A separate process can always be killed.
Why ``subprocess`` and not ``multiprocessing``: daemonic multiprocessing workers (e.g. a
``multiprocessing.Pool``) may not start multiprocessing children, but they may run subprocesses.

Each ``SandboxWorker`` is one ``python -m effreason.grading.worker`` process speaking JSON lines
(see that module). The parent waits for a reply with ``poll`` and a deadline; on timeout it kills
the worker, starts a replacement at once, and reports ``"timeout"``; a worker that died is
restarted and the item reports ``"error"``. ``SandboxPool`` hands idle workers to threads, so it is
thread-safe; workers start lazily, are reused, and are stopped by ``close()``, by garbage
collection or at interpreter exit. After ``fork`` a child process never touches the parent's
workers: it starts its own. POSIX only.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import time
import weakref
from pathlib import Path

logger = logging.getLogger(__name__)

WORKER_MODULE = "effreason.grading.worker"
#: Starting a worker imports sympy and math-verify (about a second); allow for a loaded machine.
STARTUP_TIMEOUT_S = 60.0
_MAX_REPLY_BYTES = 1 << 20
_MAX_REQUEST_BYTES = 60_000  # below the 64 KiB Linux pipe buffer
# CPU seconds a worker may spend on one request beyond the parent's limit before the kernel ends
# it (only matters for a worker whose parent died while it was stuck).
_CPU_BACKSTOP_S = 10.0


class WorkerTimeout(Exception):
    """The worker did not answer within the time limit (it has been killed and restarted)."""


class WorkerError(Exception):
    """The worker died, could not start, or sent a malformed reply (it has been restarted)."""


def _worker_env() -> dict[str, str]:
    """The parent's environment, with the directory holding ``effreason`` on ``PYTHONPATH``."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class SandboxWorker:
    """One worker process. Not thread-safe: ``SandboxPool`` gives it to one thread at a time."""

    def __init__(self, memory_mb: int = 4096):
        self.memory_mb = memory_mb
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._buffer = b""
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        """Process id of the running worker, if any."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the process without waiting for it to be ready."""
        self.kill()
        command = [sys.executable, "-m", WORKER_MODULE, "--memory-mb", str(self.memory_mb)]
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=_worker_env(), close_fds=True)
        self._ready, self._buffer = False, b""

    def kill(self) -> None:
        """Kill the process (if running) and reap it."""
        proc, self._proc, self._ready = self._proc, None, False
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def close(self) -> None:
        """Stop the process: close its stdin, give it a moment to exit, then kill it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=1.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _ensure_ready(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        if not self._ready:
            try:
                hello = self._read_reply(time.monotonic() + STARTUP_TIMEOUT_S)
            except (WorkerTimeout, WorkerError) as e:
                self.kill()
                logger.error("grading worker failed to start: %s", e)
                raise WorkerError(f"grading worker failed to start ({e}); run `python -m "
                                  f"{WORKER_MODULE}` to see why") from None
            if not hello.get("ready"):
                self.kill()
                raise WorkerError(f"grading worker sent {hello!r} instead of a ready message")
            self._ready = True

    def _read_reply(self, deadline: float) -> dict:
        """Read one JSON line from the worker before ``deadline`` (``time.monotonic``)."""
        fd = self._proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout("no reply in time")
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerError(f"worker exited with code {self._proc.wait()}")
            self._buffer += chunk
            if len(self._buffer) > _MAX_REPLY_BYTES:
                raise WorkerError("reply too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            raise WorkerError(f"malformed reply {line[:200]!r}") from None
        if not isinstance(reply, dict):
            raise WorkerError(f"malformed reply {line[:200]!r}")
        return reply

    def request(self, payload: dict, timeout_s: float) -> dict:
        """Send one request and return the reply within ``timeout_s`` (worker start not counted).

        Raises:
            WorkerTimeout: no reply in time; the worker was killed and a new one started.
            WorkerError: the worker died or misbehaved; it was restarted.
        """
        self._next_id += 1
        message = dict(payload, id=self._next_id, cpu_s=timeout_s + _CPU_BACKSTOP_S)
        line = (json.dumps(message) + "\n").encode()
        if len(line) > _MAX_REQUEST_BYTES:
            # A request must fit in the pipe buffer, so writing it can never block on a busy worker.
            raise ValueError(f"request of {len(line)} bytes exceeds {_MAX_REQUEST_BYTES}")
        self._ensure_ready()
        try:
            self._proc.stdin.write(line)
            self._proc.stdin.flush()
            reply = self._read_reply(time.monotonic() + timeout_s)
        except WorkerTimeout:
            logger.warning("grading worker %s timed out after %.1f s; restarting it", self.pid, timeout_s)
            self.start()
            raise
        except (OSError, WorkerError) as e:
            logger.warning("grading worker %s failed (%s); restarting it", self.pid, e)
            self.start()
            raise WorkerError(str(e)) from None
        if reply.get("id") != self._next_id:
            self.start()
            raise WorkerError(f"reply {reply!r} does not answer request {self._next_id}")
        return reply


def _close_workers(workers: list[SandboxWorker], owner_pid: int) -> None:
    # A forked child inherits the parent's pool objects; only the owning process may stop workers.
    if os.getpid() != owner_pid:
        return
    for worker in workers:
        worker.close()


class SandboxPool:
    """A fixed number of lazily started ``SandboxWorker``s shared safely between threads."""

    def __init__(self, num_workers: int = 1, *, memory_mb: int = 4096):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.memory_mb = memory_mb
        self._setup()

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._workers = [SandboxWorker(self.memory_mb) for _ in range(self.num_workers)]
        self._idle: queue.SimpleQueue[SandboxWorker] = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)
        self._finalizer = weakref.finalize(self, _close_workers, self._workers, self._pid)

    def request(self, payload: dict, timeout_s: float) -> dict:
        """Run one request on an idle worker (blocks while all are busy); see ``SandboxWorker``."""
        if os.getpid() != self._pid:  # forked: the inherited workers belong to the parent
            self._finalizer.detach()
            self._setup()
        worker = self._idle.get()
        try:
            return worker.request(payload, timeout_s)
        finally:
            self._idle.put(worker)

    def worker_pids(self) -> list[int | None]:
        """Process ids of the workers (``None`` for one not started); for tests and debugging."""
        return [worker.pid for worker in self._workers]

    def close(self) -> None:
        """Stop all workers. The pool can still be used afterwards: workers restart lazily."""
        self._finalizer()
        if os.getpid() == self._pid:
            self._finalizer = weakref.finalize(self, _close_workers, self._workers, self._pid)
