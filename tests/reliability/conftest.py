"""Reliability suite fixtures: profile sizes, a sandbox process, the summary file."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from multiprocessing.context import ForkServerContext
from pathlib import Path

import pytest

from tests.reliability.harness import SandboxProcess, running_sandbox

SUMMARY = Path(__file__).resolve().parents[2] / "tests" / "output" / "reliability-summary.jsonl"
PRELOAD = ["gateway.bootstrap", "gateway.service", "adapters.alipay.adapter",
           "adapters.wechatpay.adapter", "adapters.bankcard.adapter",
           "adapters.balance.adapter", "tests.reliability.workers"]


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest) -> dict[str, int]:
    """CI profile by default; ``--long`` for the long one (DESIGN: 1,000 runs each)."""
    long = bool(request.config.getoption("--long"))
    # PostgreSQL runs cost ~0.6 s each (a new process connects and checks the schema):
    # fewer of them in CI keep the suite inside its time budget.
    # The CI profile keeps the README's test command near its time budget (the suite runs
    # on three stores now); --long runs the full 1,000 of each.
    return {"crash_runs": 1000 if long else 12, "crash_runs_pg": 1000 if long else 12,
            "fault_refunds": 1000 if long else 400}


@pytest.fixture(scope="session")
def forkserver() -> ForkServerContext:
    ctx = mp.get_context("forkserver")
    assert isinstance(ctx, ForkServerContext)
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


@pytest.fixture(scope="module")
def sandbox_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox")) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def summary_path() -> Path:
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    return SUMMARY
