"""Fixtures for the conformance suite: clients nobody on this project wrote, installed from
the project's own pinned files and run against the in-process sandbox.

* ``alipay_official``: Alipay's official Python SDK (``alipay-sdk-python``) installed with
  ``pip --target`` into ``<venv>/conformance/`` from ``requirements-alipay-official.txt``
  (exact pins). Not in the ``dev`` extra: it installs a top-level ``alipay`` package, as
  python-alipay-sdk (the adapter's SDK, ``pyproject.toml``) does, and the later install
  would overwrite the other's ``alipay/__init__.py`` in one site-packages. Its runner is a
  subprocess with ``PYTHONPATH`` set to that folder.
* ``node_sdks``: ``npm ci`` of ``js/package.json`` + ``js/package-lock.json`` (exact pins:
  ``alipay-sdk``, ``wechatpay-axios-plugin``) into ``<venv>/conformance/node-<hash>/``,
  once per lock file; a rerun reuses it without the network. Skipped, with the reason
  printed, only when ``node`` or ``npm`` is absent.
* ``client_env``: the sandbox's settings as an outside client reads them: from the env
  file ``refund-gateway sandbox serve --env-file`` writes (``SandboxServer.write_env_file``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dotenv import dotenv_values

from sandbox.server import SandboxServer
from tests.sandbox.channel_support import Catcher

HERE = Path(__file__).parent
JS = HERE / "js"
RUNNERS = HERE / "runners"
CACHE = Path(sys.prefix) / "conformance"
ALIPAY_OFFICIAL_REQUIREMENTS = HERE / "requirements-alipay-official.txt"
INSTALL_TIMEOUT = 600
RUN_TIMEOUT = 60


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _install_once(target: Path, install: list[str], cwd: Path | None = None) -> Path:
    """Run ``install`` (which fills ``<target>.part``) unless ``target`` is complete; one
    process at a time (an exclusive lock beside it), so parallel runs share one install."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        return _install(target, install, cwd)


def _install(target: Path, install: list[str], cwd: Path | None) -> Path:
    part = target.with_name(target.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        if cwd is not None:
            shutil.copy(cwd / name, part / name)
    cmd = [arg.replace("{target}", str(part)) for arg in install]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                            check=False)
    if result.returncode != 0:
        shutil.rmtree(part, ignore_errors=True)
        pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    (part / ".complete").write_text(" ".join(cmd) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    part.rename(target)
    return target


@pytest.fixture(scope="session")
def alipay_official() -> Path:
    """The folder holding the official Alipay Python SDK and its pinned dependencies."""
    target = CACHE / f"alipay-sdk-python-{_digest(ALIPAY_OFFICIAL_REQUIREMENTS)}"
    return _install_once(target, [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-compile", "--target", "{target}",
        "-r", str(ALIPAY_OFFICIAL_REQUIREMENTS)])


@pytest.fixture(scope="session")
def node_sdks() -> Path:
    """``node_modules`` of the pinned Node clients (skips only without node/npm)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = (f"Node conformance clients need node and npm on PATH "
                  f"(node: {node}, npm: {npm})")
        pytest.skip(reason)       # printed in the summary: addopts has -ra
    target = CACHE / f"node-{_digest(JS / 'package.json', JS / 'package-lock.json')}"
    _install_once(target, [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error",
                           "--prefix", "{target}"], cwd=JS)
    return target / "node_modules"


def run_client(argv: list[str], payload: dict[str, Any], env: dict[str, str]
               ) -> dict[str, Any]:
    """Run one client command; its stdout is one JSON object."""
    full_env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost", **env}
    result = subprocess.run(argv, input=json.dumps(payload, ensure_ascii=False),
                            capture_output=True, text=True, timeout=RUN_TIMEOUT,
                            env=full_env, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    try:
        out: dict[str, Any] = json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"{' '.join(argv)} printed no JSON:\n{result.stdout[-3000:]}"
                             f"\n{result.stderr[-3000:]}") from exc
    return out


@pytest.fixture
def node(node_sdks: Path) -> Any:
    """``node(script, command, payload)`` -> the script's JSON answer."""
    def run(script: str, command: str, payload: dict[str, Any]) -> dict[str, Any]:
        return run_client([str(shutil.which("node")), str(JS / script), command], payload,
                          {"NODE_PATH": str(node_sdks)})
    return run


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> SandboxServer:
    """The plugin's running sandbox, reset for this test."""
    return refund_sandbox


@pytest.fixture
def client_env(sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    """``REFUND_GATEWAY_*`` as a client outside this process reads them (the env file)."""
    path = sandbox.write_env_file(tmp_path / "sandbox.env")
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    """The merchant's notification endpoint (records every POST)."""
    c = Catcher()
    yield c
    c.close()


def control(sandbox: SandboxServer, path: str, body: dict[str, Any] | None = None) -> Any:
    url = sandbox.url + path
    r = (requests.post(url, json=body, timeout=5) if body is not None
         else requests.get(url, timeout=5))
    r.raise_for_status()
    return r.json()


def pay(sandbox: SandboxServer, route: str, fen: int = 10_000) -> dict[str, Any]:
    doc: dict[str, Any] = control(sandbox, "/_sandbox/payments",
                                  {"route": route, "amount_fen": fen})
    return doc


def fault(sandbox: SandboxServer, route: str, operation: str, kind: str) -> None:
    control(sandbox, "/_sandbox/faults",
            {"route": route, "operation": operation, "kind": kind, "count": 1})


def truth(sandbox: SandboxServer, route: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = control(sandbox, "/_sandbox/refunds")["refunds"]
    return [r for r in rows if r["route"] == route]
