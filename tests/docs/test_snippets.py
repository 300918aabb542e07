"""Every code block of README.md and docs/ runs (issue 22): an example that drifts from
the API fails here. How blocks are found and marked: tests/docs/snippets.py.

Setups (``<!-- snippet: setup=NAME -->``), each on the pytest plugin's sandbox:
* ``sandbox-env``: the working directory holds a ``.env`` the sandbox wrote (plus a
  database in it), and the sandbox knows the README's payments: WeChat ORD123 /
  4200000001 (100.00) and bank card ORD456 / 202611200000000145678 (200.00, user u-42).
* ``abnormal-card``: the bank-card route answers the next refund abnormal (card
  cancelled).
Checks (``check=NAME``), run after the block: ``flask-notify`` drives the block's Flask
``app`` with the sandbox's notification of a new refund and asserts it was applied.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest

from sandbox.server import SandboxServer
from sandbox.state import Fault
from sandbox.state import Payment as SandboxPayment
from tests.docs.snippets import (
    KNOWN_OPTIONS,
    OUTPUT_LANGUAGES,
    ROOT,
    Snippet,
    all_snippets,
    commands,
    reference,
)

SNIPPETS = all_snippets()
CLI = [sys.executable, "-c", "from gateway.cli import main; main()"]
# The README's payments, seeded in the sandbox with exactly these numbers.
README_PAYMENTS = (("wechatpay", "ORD123", "4200000001", 10_000, "u-1"),
                   ("bankcard", "ORD456", "202611200000000145678", 20_000, "u-42"))


def _ids(snippets: list[Snippet]) -> list[str]:
    return [s.where for s in snippets]


def _of(*langs: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.lang in langs]


# -- the collection itself --------------------------------------------------------------

def test_snippets_are_found() -> None:
    """The collector sees the README's blocks (a broken extractor would pass vacuously)."""
    readme = [s for s in SNIPPETS if s.path.name == "README.md"]
    assert len([s for s in readme if s.lang == "python"]) >= 4
    assert len([s for s in readme if s.lang == "bash"]) >= 6
    assert any("RefundGateway.from_settings" in s.code for s in readme)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=_ids(SNIPPETS))
def test_every_block_is_code_we_run_or_marked_output(snippet: Snippet) -> None:
    assert snippet.lang, f"{snippet.where}: a fence without a language (python, bash, text)"
    assert snippet.lang in {"python", "bash", *OUTPUT_LANGUAGES}, snippet.where
    unknown = set(snippet.options) - KNOWN_OPTIONS
    assert not unknown, f"{snippet.where}: unknown snippet options {unknown}"
    if "skip" in snippet.options:
        assert snippet.options.get("reason"), f"{snippet.where}: skip needs a reason"
    for name in snippet.setups:
        assert name in SETUPS, f"{snippet.where}: unknown setup {name!r}"
    if "check" in snippet.options:
        assert snippet.options["check"] in CHECKS, snippet.where


# -- setups -----------------------------------------------------------------------------

def _seed(sandbox: SandboxServer, route: str, order: str, trade: str, fen: int,
          user_id: str) -> None:
    state = sandbox.state
    with state.lock:
        payment = SandboxPayment(route=route, merchant_order_no=order, channel_trade_no=trade,
                                 amount_fen=fen, created_at=datetime.now(UTC),
                                 user_id=user_id, card_no="6222021000001234")
        state.payments[(route, order)] = payment
        state.payments_by_trade[(route, trade)] = payment


def _sandbox_env(sandbox: SandboxServer, cwd: Path) -> None:
    env = sandbox.write_env_file(cwd / ".env")
    with env.open("a", encoding="utf-8") as fh:
        fh.write(f'REFUND_GATEWAY_DATABASE_URL="sqlite:///{cwd / "gateway.db"}"\n'
                 'REFUND_GATEWAY_LOG_LEVEL="WARNING"\n')
    for payment in README_PAYMENTS:
        _seed(sandbox, *payment)


def _abnormal_card(sandbox: SandboxServer, cwd: Path) -> None:
    sandbox.state.add_fault(Fault("bankcard", "refund", "abnormal", 1, {}))


SETUPS: dict[str, Callable[[SandboxServer, Path], None]] = {
    "sandbox-env": _sandbox_env,
    "abnormal-card": _abnormal_card,
}


@pytest.fixture
def snippet_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean working directory and no REFUND_GATEWAY_* from the machine."""
    for key in list(os.environ):
        if key.startswith("REFUND_GATEWAY_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _prepare(snippet: Snippet, request: pytest.FixtureRequest, cwd: Path) -> None:
    if "skip" in snippet.options:
        pytest.skip(f"{snippet.where}: {snippet.options['reason']}")
    if snippet.setups:
        sandbox: SandboxServer = request.getfixturevalue("refund_sandbox")
        for name in snippet.setups:
            SETUPS[name](sandbox, cwd)


# -- python -----------------------------------------------------------------------------

def _check_flask_notify(namespace: dict[str, Any], sandbox: SandboxServer) -> None:
    from gateway import Money, Payment, RefundRequest, RefundStatus

    app, gw = namespace["app"], namespace["gw"]
    paid = sandbox.state.add_payment("wechatpay", 5_000)
    refund = gw.refund(RefundRequest("snippet-flask", Payment(
        "wechatpay", paid.merchant_order_no, paid.channel_trade_no, Money(5_000)),
        Money(1_000)))
    client = app.test_client()
    notes = sandbox.pending_notifications("wechatpay")
    assert notes, "the refund sent no notification"
    for note in notes:
        answer = client.post("/notify/wechatpay", data=note.body, headers=note.headers)
        assert 200 <= answer.status_code < 300, answer.data
    forged = client.post("/notify/wechatpay", data=b"{}", headers={"X": "1"})
    assert forged.status_code >= 400    # a forged one is refused through the handler too
    assert gw.get(refund.id).status is RefundStatus.SUCCEEDED


CHECKS: dict[str, Callable[[dict[str, Any], SandboxServer], None]] = {
    "flask-notify": _check_flask_notify,
}

PYTHON = [s for s in _of("python") if "pytest" not in s.options]


@pytest.mark.parametrize("snippet", PYTHON, ids=_ids(PYTHON))
def test_python_block_runs(snippet: Snippet, snippet_dir: Path,
                           request: pytest.FixtureRequest) -> None:
    _prepare(snippet, request, snippet_dir)
    namespace: dict[str, Any] = {"__name__": "snippet"}
    try:
        exec(compile(snippet.code, snippet.where, "exec"), namespace)  # noqa: S102
        check = snippet.options.get("check")
        if check:
            CHECKS[check](namespace, request.getfixturevalue("refund_sandbox"))
    finally:
        gw = namespace.get("gw")
        if gw is not None and hasattr(gw, "close"):
            gw.close()


PYTEST = [s for s in _of("python") if "pytest" in s.options]


@pytest.mark.parametrize("snippet", PYTEST, ids=_ids(PYTEST))
def test_pytest_block_passes(snippet: Snippet, snippet_dir: Path) -> None:
    """The block is a test file a refund service would write: run by pytest, with the
    plugin the package installs, in a directory of its own."""
    (snippet_dir / "test_example.py").write_text(snippet.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_example.py"], cwd=snippet_dir, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout


# -- bash -------------------------------------------------------------------------------

def _parse_cli(argv: list[str]) -> None:
    """Parse a ``refund-gateway`` command line with the real click commands (options,
    arguments, choices, required ones) without running it."""
    from gateway.cli import main

    ctx = main.make_context("refund-gateway", list(argv), resilient_parsing=False)
    command: click.Command = main
    with ctx:
        while isinstance(command, click.Group):
            rest = [*ctx._protected_args, *ctx.args]
            name, sub, rest = command.resolve_command(ctx, rest)
            assert sub is not None, f"no command {name!r}"
            ctx = sub.make_context(name or sub.name, rest, parent=ctx)
            command = sub


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {line.split(":")[0].strip() for line in text.splitlines()
            if line and not line.startswith(("\t", "#", " ")) and ":" in line
            and "=" not in line.split(":")[0]}


def _extras() -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["project"]["optional-dependencies"])


def _setting_names() -> set[str]:
    return set(reference().all_settings_names())


def check_command(argv: list[str]) -> None:
    """A bash line of ours is what the project has (fails with why, when it is not)."""
    program, args = argv[0], argv[1:]
    if program == "refund-gateway":
        try:
            _parse_cli(args)
        except click.ClickException as exc:
            raise AssertionError(f"{' '.join(argv)}: {exc.format_message()}") from None
    elif program == "make":
        missing = set(args) - _make_targets()
        assert not missing, f"no make target {missing}"
    elif program == "pip":
        assert args[0] == "install", argv
        for spec in args[1:]:
            name, _, extra = spec.partition("[")
            assert name == "refund-gateway", spec
            assert extra.rstrip("]") in _extras(), f"no extra {spec}"
    elif program == "export":
        for assignment in args:
            name = assignment.split("=", 1)[0]
            assert name in _setting_names() | {"REFUND_GATEWAY_CONFIG_FILE"}, \
                f"{name} is no setting"
    elif program in (".venv/bin/pytest", ".venv/bin/python"):
        for arg in args:
            if arg.startswith("--"):
                assert arg in (ROOT / "tests" / "conftest.py").read_text(), arg
            else:
                assert (ROOT / arg).exists(), f"{arg} does not exist"
    else:
        raise AssertionError(f"{program}: not a command the snippet tests know; mark the "
                             "block <!-- snippet: skip reason=\"...\" -->")


def _run_command(argv: list[str], cwd: Path) -> None:
    """Execute one ``refund-gateway`` line against the sandbox's settings in ``cwd``. A
    long-running one (``--loop``, ``serve``) must stay up, then stop cleanly on SIGTERM."""
    assert argv[0] == "refund-gateway", "only our commands are executed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}
    long_running = "--loop" in argv or "serve" in argv
    process = subprocess.Popen([*CLI, *argv[1:]], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if long_running:
        stopped = threading.Timer(3.0, process.send_signal, (signal.SIGTERM,))
        stopped.start()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, f"{' '.join(argv)}: exit {process.returncode}\n{err}"


BASH = _of("bash")


@pytest.mark.parametrize("snippet", BASH, ids=_ids(BASH))
def test_bash_block_is_ours(snippet: Snippet, snippet_dir: Path,
                            request: pytest.FixtureRequest) -> None:
    _prepare(snippet, request, snippet_dir)
    argvs = commands(snippet.code)
    assert argvs, f"{snippet.where}: an empty bash block"
    for argv in argvs:
        check_command(argv)
    if "run" in snippet.options:
        for argv in argvs:
            _run_command(argv, snippet_dir)


# -- the checks can fail ----------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["refund-gateway", "refnd", "--route", "alipay"],          # no such command
    ["refund-gateway", "reroute", "RF1", "--to", "paypal"],    # not a route
    ["refund-gateway", "refund", "--route", "alipay"],         # required options missing
    ["refund-gateway", "status", "RF1", "--sycn"],             # no such option
    ["make", "docz"],
    ["pip", "install", "refund-gateway[oracle]"],
    ["export", "REFUND_GATEWAY_DATABSE_URL=sqlite:///x.db"],
    ["curl", "http://127.0.0.1"],
])
def test_a_drifted_command_is_caught(argv: list[str]) -> None:
    with pytest.raises(AssertionError):
        check_command(argv)


def test_a_drifted_python_block_fails(snippet_dir: Path) -> None:
    drifted = "from gateway import RefundGateway\nRefundGateway.from_setting()\n"
    with pytest.raises(AttributeError):
        exec(compile(drifted, "drifted", "exec"), {})  # noqa: S102
