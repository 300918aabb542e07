"""The reliability suite's tools: a sandbox in its own process, gateways in others.

The sandbox runs as the documented command (``python -m sandbox serve --port N
--env-file F``), so the suite drives it only through its HTTP contract (DESIGN.md
"Sandbox contract"): ``/_sandbox/payments``, ``/_sandbox/refunds`` (the truth),
``/_sandbox/faults``, ``/_sandbox/reset``. Gateway processes are forked from a
``forkserver`` that has the project preloaded, so a run costs milliseconds, not an
interpreter start-up; each builds its own engine from the env file the sandbox wrote.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SandboxProcess:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = None
    # ``--state``: a restarted process (``start()`` again) resumes from this file.
    state_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env_file(self) -> Path:
        return self.workdir / "sandbox.env"

    def start(self) -> SandboxProcess:
        self._log = log = (self.workdir / "sandbox.log").open("ab")
        state = ["--state", str(self.state_file)] if self.state_file else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--env-file", str(self.env_file), *state],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **NO_PROXY})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox exited: {(self.workdir / 'sandbox.log').read_text()}")
            try:
                if self.env_file.exists() and requests.get(
                        f"{self.url}/_sandbox/refunds", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("sandbox did not start in 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = requests.request(method, f"{self.url}{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json() if r.content else None

    def payment(self, route: str, amount_fen: int) -> dict[str, Any]:
        return dict(self.call("POST", "/_sandbox/payments",
                              {"route": route, "amount_fen": amount_fen}))

    def fault(self, route: str, operation: str, kind: str, count: int = 1,
              **extra: Any) -> None:
        self.call("POST", "/_sandbox/faults", {"route": route, "operation": operation,
                                                "kind": kind, "count": count, **extra})

    def truth(self) -> list[dict[str, Any]]:
        data = self.call("GET", "/_sandbox/refunds")
        return list(data["refunds"] if isinstance(data, dict) else data)

    def reset(self) -> None:
        self.call("POST", "/_sandbox/reset", {})


@contextmanager
def running_sandbox(workdir: Path) -> Iterator[SandboxProcess]:
    sandbox = SandboxProcess(workdir).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Append one profile's figures to the suite's summary (JSON lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(summary, sort_keys=True) + "\n")
