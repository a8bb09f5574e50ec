"""Start real ``aegis`` processes on this machine: for tests, benchmarks and local clusters.

``LocalNode(data_dir, ...)`` runs ``python -m aegiskv`` with the given flags,
waits until the node logs the addresses it bound (port 0 works: the OS picks a
free port and the node prints it on its ``aegis ready:`` line), and keeps reading its output so the pipe never
fills. ``stop()`` sends SIGTERM and waits for the drain; ``kill()`` is SIGKILL.

``command_prefix`` runs the node under a launcher that ``exec``s it, such as
``ip netns exec NAME`` (a node inside a network namespace): the process's PID
is then the node's own, so ``kill()`` and signals reach the node itself.

``cluster_port=False`` leaves out ``--cluster-bind``: for the ``aegis`` of a
revision from before the cluster port (bench/baseline.py runs such builds),
which would refuse the flag.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

_READY = re.compile(r"^aegis ready: .*$")
_ADDRESS = re.compile(r"(?P<name>\w+)=\[?(?P<host>[^\s\]]+?)\]?:(?P<port>\d+)(?=\s|$)")


class NodeStartError(RuntimeError):
    """The process exited (or stayed silent) before it was serving."""


class LocalNode:
    def __init__(
        self,
        data_dir: str,
        args: Sequence[str] = (),
        *,
        bind: str = "127.0.0.1:0",
        resp_bind: str = "127.0.0.1:0",
        health_addr: str | None = "127.0.0.1:0",
        gossip: str | None = "127.0.0.1:0",
        cluster_bind: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
        python: str = sys.executable,
        command_prefix: Sequence[str] = (),
        cluster_port: bool = True,
    ) -> None:
        command = [*command_prefix, python, "-m", "aegiskv"]
        command += ["--bind", bind, "--resp-bind", resp_bind, "--data-dir", data_dir]
        command += ["--gossip", gossip or "off"]
        if gossip and cluster_port:
            # The cluster port (leases, replication) on the gossip host, any free port unless given.
            command += ["--cluster-bind", cluster_bind or f"{gossip.rpartition(':')[0]}:0"]
        if health_addr:
            command += ["--health-addr", health_addr]
        command += list(args)
        environment = dict(os.environ if env is None else env)
        environment.setdefault("AEGIS_LOG_FORMAT", "text")
        # The child imports the aegiskv this process runs, not an aegiskv/ source
        # directory that happens to be the working directory (which `-m` would
        # put first on sys.path): a compiled install must stay compiled.
        # Python 3.11+; 3.10 ignores it.
        environment.setdefault("PYTHONSAFEPATH", "1")
        self.command = command
        self.lines: list[str] = []
        self._lines_lock = threading.Condition()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read_log, name=f"log-{self.process.pid}", daemon=True)
        self._reader.start()
        self.addresses = self._wait_ready(start_timeout)
        self.address = self.addresses["native"]
        self.health_address = self.addresses.get("health")
        self.resp_address = self.addresses.get("resp")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address_text(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lines_lock:
                self.lines.append(line.rstrip("\n"))
                self._lines_lock.notify_all()
        with self._lines_lock:
            self._lines_lock.notify_all()

    def _wait_ready(self, timeout: float) -> dict[str, tuple[str, int]]:
        """Addresses from the daemon's ``aegis ready:`` line, by name (native, health, ...)."""
        deadline = time.monotonic() + timeout
        with self._lines_lock:
            while True:
                for line in self.lines:
                    if _READY.match(line):
                        return {match["name"]: (match["host"], int(match["port"])) for match in _ADDRESS.finditer(line)}
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise NodeStartError(
                        f"aegis exited with code {self.process.returncode} before serving:\n" + "\n".join(self.lines)
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise NodeStartError("aegis did not report serving in time:\n" + "\n".join(self.lines))
                self._lines_lock.wait(min(remaining, 0.1))

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """The first log line matching ``pattern`` (a regex), waiting for it to appear."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._lines_lock:
            while True:
                for line in self.lines:
                    if compiled.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines))
                self._lines_lock.wait(min(remaining, 0.1))

    def log_text(self) -> str:
        with self._lines_lock:
            return "\n".join(self.lines)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process.poll() is None:
            self.stop()
