"""Child processes of the demo: each in its own process group, logged to a file, stoppable.

Each child is started with ``start_new_session=True``, so it leads a process group of its own:
Ctrl-C in the terminal reaches only the runner, which then stops the children in order, and a
stop signal sent to the group also reaches anything the child started itself. ``stop`` sends
SIGTERM to the group, waits, then SIGKILLs it, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from enviromon_sim.demo.errors import ServiceFailedError

_log = logging.getLogger(__name__)

#: Seconds between readiness probes.
PROBE_INTERVAL_S = 0.1
#: Lines of a child's log quoted when it fails.
LOG_TAIL_LINES = 15


class Child:
    """One child process of the demo (a service or a simulated Pi)."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not name or not argv:
            raise ValueError("a child needs a name and a command")
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id), once started."""
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        """Start it, with stdout and stderr appended to its log file."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own commands, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def running(self) -> bool:
        """Whether it was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float, what: str) -> float:
        """Poll ``probe`` until it is true; return the seconds it took.

        Raises:
            ServiceFailedError: the child exited, or ``timeout`` passed; the message quotes
                the end of its log.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if not self.running():
                code = None if self.proc is None else self.proc.returncode
                raise ServiceFailedError(
                    f"{self.name} exited (code {code}) before {what}.\n{self.log_tail()}"
                )
            try:
                if probe():
                    return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServiceFailedError(
                    f"{self.name}: not {what} within {timeout:.0f} s.\n{self.log_tail()}"
                )
            time.sleep(PROBE_INTERVAL_S)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of its log, indented, with the log's path."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        tail = text.splitlines()[-lines:]
        quoted = "\n".join("    " + line for line in tail) if tail else "    (empty)"
        return f"  last lines of {self.log_path}:\n{quoted}"

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its whole process group (nothing if it is gone)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the group and reap it (a crash, for fault tests)."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def reap(self) -> None:
        """Collect its exit status if it has exited (no zombie)."""
        if self.proc is not None:
            self.proc.poll()


def stop_all(children: Iterable[Child], *, grace: float) -> list[str]:
    """SIGTERM every child's group, wait up to ``grace`` s, SIGKILL what is left.

    Returns the names of the children that had to be killed.
    """
    group = [c for c in children if c.proc is not None]
    for child in group:
        if child.running():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in group:
        assert child.proc is not None
        remaining = max(0.0, deadline - time.monotonic())
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=remaining)
    killed = []
    for child in group:
        assert child.proc is not None
        if child.proc.poll() is None:
            killed.append(child.name)
            _log.warning("%s did not stop within %.0f s: killed", child.name, grace)
        # The group too: a leader that exited may have left a child of its own behind.
        child.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=5)
    return killed


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(pgids: Iterable[int], *, grace: float) -> None:
    """SIGTERM process groups we did not start in this process, wait, then SIGKILL them."""
    groups = list(pgids)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
