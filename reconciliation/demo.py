"""``refund-gateway demo``: the whole product in one command, on the embedded default.

It starts the sandbox in-process on a free port, pays on all four routes, refunds them
(full, partial, several partials of one payment), injects faults (a timeout after the
channel committed, a rate limit, an abnormal bank card rerouted to the platform balance,
a refund missing from the channel's statement), resolves, applies notifications,
downloads every channel's statement, reconciles twice (today, and once the arrival
window has passed), and writes reports and a transfer receipt to ``./demo-output/``.

This is the one module outside ``sandbox/`` that imports it: the demo composes the
product with its emulator; nothing on the refund path does.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from gateway import (
    ConfigurationError,
    Money,
    OverRefund,
    Payment,
    Refund,
    RefundGateway,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.bootstrap import build_adapters, build_gateway
from gateway.calendar import add_working_days
from gateway.clock import to_beijing, utcnow
from gateway.settings import load_settings
from reconciliation.receipts.render import find_cjk_font
from sandbox.server import SandboxServer
from sandbox.state import Fault


@dataclass
class Story:
    """What happened, in the order it happened, for the closing summary."""

    lines: list[str] = field(default_factory=list)
    step: str = "starting the sandbox"
    failed: list[str] = field(default_factory=list)        # steps that did not work
    another_way: list[str] = field(default_factory=list)   # steps done differently

    def say(self, text: str) -> None:
        self.lines.append(text)
        click.echo(f"  {text}")

    def expect(self, what: str, code: int, wanted: int) -> None:
        """A CLI step exited ``code``; anything but ``wanted`` is a failed step."""
        if code != wanted:
            self.failed.append(f"{self.step}: {what} exited {code}, expected {wanted}")


def _tracking(echo: Callable[[str], None], story: Story) -> Callable[[str], None]:
    """``echo`` that notes a numbered heading ("2. Notifications ...") as the current
    step, so a failure names it."""

    def tracked(text: str) -> None:
        if text.strip()[:2].rstrip(".").isdigit():
            story.step = text.strip()
        echo(text)

    return tracked


class DemoFailed(click.ClickException):
    """A demo step raised: named, exit 1, never "Done"."""

    exit_code = 1


@dataclass
class DemoClock:
    """Real time plus an offset the demo moves forward to make resolver checks due."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


def _pay(sandbox: SandboxServer, route: Route, yuan: str) -> Payment:
    amount = Money.parse(yuan)
    p = sandbox.state.add_payment(route.value, amount.minor)
    return Payment(route=route, merchant_order_no=p.merchant_order_no,
                   channel_trade_no=p.channel_trade_no, amount=amount, user_id=p.user_id)


def _fault(sandbox: SandboxServer, route: Route, operation: str, kind: str,
           **params: Any) -> None:
    sandbox.state.add_fault(Fault(route.value, operation, kind, 1, params))


def _deliver_notifications(gw: RefundGateway, sandbox: SandboxServer) -> tuple[int, int]:
    accepted = rejected = 0
    for note in sandbox.pending_notifications():
        ack = gw.handle_notification(note.route, note.headers, note.body)
        accepted += ack.accepted
        rejected += not ack.accepted
    return accepted, rejected


def _resolve_all(gw: RefundGateway, clock: DemoClock, sandbox: SandboxServer,
                 ids: list[str]) -> int:
    cycles = 0
    for _ in range(12):
        _deliver_notifications(gw, sandbox)
        if all(gw.get(i).status.is_final or gw.get(i).status is RefundStatus.ABNORMAL
               for i in ids):
            break
        clock.offset += timedelta(minutes=30)
        gw.resolve_due()
        cycles += 1
    return cycles


def _line(refund: Refund) -> str:
    return (f"{refund.route.value:<9} {refund.amount.format():>7} CNY  "
            f"{refund.status.value:<10} {refund.id}")


def run_demo(out: Path, echo: Callable[[str], None] = click.echo) -> dict[str, Any]:
    """Run the demo into ``out``; returns what the end-to-end test checks."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    story = Story()
    started = time.monotonic()
    echo = _tracking(echo, story)
    sandbox = SandboxServer(seed=20261120).start()
    try:
        env_file = sandbox.write_env_file(out / "sandbox.env")
        with env_file.open("a", encoding="utf-8") as fh:
            # The receipt signing key (Ed25519) comes with the sandbox's env file.
            fh.write('REFUND_GATEWAY_LOG_LEVEL="ERROR"\n'
                     f'REFUND_GATEWAY_DATABASE_URL="sqlite:///{out / "refund-gateway.db"}"\n')
            for route in Route:   # short read timeouts: the timeout fault resolves fast
                fh.write(f"REFUND_GATEWAY_{route.value.upper()}__TIMEOUTS__READ=1.0\n")
        settings = load_settings(env_file, log_level="ERROR", log_format="console")
        # The resolver's clock runs ahead so its checks come due without waiting; the
        # adapters keep real time (WeChat refuses notifications more than 300 s off).
        clock = DemoClock()
        gw = build_gateway(settings, clock=clock, adapters=build_adapters(settings))
        echo(f"sandbox on {sandbox.url}; gateway on {settings.database_url}")

        echo("\n1. Refunds along the original route")
        ali = _pay(sandbox, Route.ALIPAY, "100.00")
        r_ali = gw.refund(RefundRequest("demo-ali-full", ali, Money.parse("100.00"),
                                        "full refund: top-up failed"))
        story.say(f"Alipay full refund          -> {r_ali.status.value}")
        again = gw.refund(RefundRequest("demo-ali-full", ali, Money.parse("100.00"),
                                        "full refund: top-up failed"))
        story.say(f"same idempotency key again  -> same refund {again.id == r_ali.id}, "
                  f"no second channel call")

        wx = _pay(sandbox, Route.WECHATPAY, "300.00")
        partials = []
        for i, yuan in enumerate(("50.00", "70.00", "30.00")):
            if i == 1:
                _fault(sandbox, Route.WECHATPAY, "refund", "rate_limited")
            partials.append(gw.refund(RefundRequest(f"demo-wx-part-{i}", wx,
                                                    Money.parse(yuan), "partly used")))
        story.say("WeChat: three partial refunds of one 300.00 payment "
                  "(the second hit FREQUENCY_LIMITED: outcome unknown, queried later)")
        try:
            gw.refund(RefundRequest("demo-wx-too-much", wx, Money.parse("200.00")))
        except OverRefund as exc:
            story.say(f"WeChat 200.00 more          -> refused before any I/O: "
                      f"{Money(exc.remaining_minor).format()} left to refund")

        wx2 = _pay(sandbox, Route.WECHATPAY, "80.00")
        _fault(sandbox, Route.WECHATPAY, "refund", "timeout_after_commit", stall_seconds=1.5)
        r_timeout = gw.refund(RefundRequest("demo-wx-timeout", wx2, Money.parse("80.00")))
        story.say(f"WeChat refund, channel committed then timed out -> "
                  f"{r_timeout.status.value} (unknown is not failure)")

        card = _pay(sandbox, Route.BANKCARD, "500.00")
        r_card = gw.refund(RefundRequest("demo-card-part", card, Money.parse("120.00"),
                                         "service 50% delivered"))
        by = r_card.expected_arrival.latest if r_card.expected_arrival else "?"
        story.say(f"bank card partial refund    -> {r_card.status.value} (arrives by {by})")

        card2 = _pay(sandbox, Route.BANKCARD, "200.00")
        _fault(sandbox, Route.BANKCARD, "refund", "abnormal")
        r_abn = gw.refund(RefundRequest("demo-card-cancelled", card2, Money.parse("200.00"),
                                        "card cancelled by the user"))

        bal = _pay(sandbox, Route.BALANCE, "50.00")
        r_bal = gw.refund(RefundRequest("demo-balance", bal, Money.parse("50.00")))
        story.say(f"platform balance refund     -> {r_bal.status.value}")

        echo("\n2. Notifications and the resolver")
        accepted, rejected = _deliver_notifications(gw, sandbox)
        ids = [r_ali.id, *(p.id for p in partials), r_timeout.id, r_card.id, r_abn.id, r_bal.id]
        cycles = _resolve_all(gw, clock, sandbox, ids)
        story.say(f"notifications applied: {accepted} (rejected {rejected}); "
                  f"resolver cycles: {cycles}")
        abnormal = gw.get(r_abn.id)
        story.say(f"cancelled bank card         -> {abnormal.status.value} "
                  f"({abnormal.failure_code})")
        linked = gw.reroute(abnormal.id, Route.BALANCE, note="card cancelled: to balance")
        story.say(f"rerouted to platform balance -> {linked.status.value} ({linked.id})")
        ids.append(linked.id)
        _resolve_all(gw, clock, sandbox, ids)
        echo("")
        for refund_id in ids:
            echo("  " + _line(gw.get(refund_id)))

        echo("\n3. Statements and reconciliation")
        # One WeChat refund goes missing from the channel's statement ("shows refunded
        # but not received"): the first WeChat line of today's bill.
        _fault(sandbox, Route.WECHATPAY, "statement", "missing_from_statement")
        today = to_beijing(datetime.now(UTC)).date()
        from gateway.cli import main as cli  # noqa: PLC0415 - the CLI is the product here

        reports = out / "reports"

        def run_cli(*args: str) -> int:
            try:
                cli.main(["--env-file", str(env_file), *args], standalone_mode=False)
            except SystemExit as exit_:
                return int(exit_.code or 0)
            return 0

        code_today = run_cli("reconcile", "--date", today.isoformat(),
                             "--out", str(reports / today.isoformat()))
        story.expect("reconcile (today)", code_today, 0)
        story.say(f"reconciliation of {today}: exit {code_today} "
                  f"(the missing WeChat line is 'in transit' inside its arrival window)")
        later = add_working_days(today, 5)
        empty = out / "statements" / f"wechatpay-{later}.csv"
        empty.parent.mkdir(parents=True, exist_ok=True)
        empty.write_bytes(sandbox.statement("wechatpay", later))
        code_later = run_cli("reconcile", "--date", later.isoformat(), "--statement",
                             str(empty), "--out", str(reports / later.isoformat()))
        story.expect("reconcile (5 working days on; one discrepancy)", code_later, 1)
        story.say(f"reconciliation of {later} (5 working days on): exit {code_later}; "
                  f"the open item is now 'refunded, not received'")

        echo("\n4. Transfer receipt for customer service")
        receipts = out / "receipts"
        formats = ["all"]
        try:
            find_cjk_font()
        except ConfigurationError as exc:   # the PDF needs one; the rest does not
            formats = ["html", "json"]
            story.another_way.append(f"the PDF receipt was skipped ({exc.message}); "
                                     "the receipt was written as HTML and JSON")
        code_receipt = max(run_cli("receipt", "--date", later.isoformat(), "--class",
                                   "refunded-not-received", "--format", fmt,
                                   "--out", str(receipts)) for fmt in formats)
        story.expect("receipt", code_receipt, 0)
        made = sorted(p.name for p in receipts.glob("*")) if receipts.exists() else []
        story.say(f"receipts written: {', '.join(made) or 'none'} (exit {code_receipt})")
        keys = out / "receipt-keys.json"
        run_cli("receipt", "keys", "--out", str(keys))
        checked = [run_cli("receipt", "verify", str(p), "--keys", str(keys))
                   for p in sorted(receipts.glob("*.json"))]
        story.say(f"public keys published to {keys.name}; receipts verified with them "
                  f"alone: {checked.count(0)} of {len(checked)}")
        truth = sandbox.state.truth()
        duplicates = sum(1 for r in truth if r["executions"] != 1)
        story.say(f"sandbox truth: {len(truth)} refunds executed, {duplicates} executed twice")
        gw.close()
    except (Exception, SystemExit) as exc:
        raise DemoFailed(f"the demo failed at step {story.step!r}: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        sandbox.stop()
    elapsed = time.monotonic() - started
    if story.failed:
        echo(f"\nFailed after {elapsed:.1f} s: " + "; ".join(story.failed))
    else:
        echo(f"\nDone in {elapsed:.1f} s"
             + "".join(f"; done another way: {note}" for note in story.another_way)
             + ". Open:")
    for path in sorted(out.rglob("*")):
        if path.suffix in (".html", ".xlsx", ".csv", ".pdf", ".json") and path.is_file():
            echo(f"  {path}")
    return {"duplicates": duplicates, "failed": story.failed,
            "another_way": story.another_way, "truth": truth, "reports": reports,
            "receipts": receipts, "exit_today": code_today, "exit_later": code_later,
            "story": story.lines, "seconds": elapsed}


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True)
def demo_command(out: Path) -> None:
    """Run every refund path against a local sandbox and reconcile it (no credentials)."""
    result = run_demo(out)
    raise SystemExit(0 if result["duplicates"] == 0 and not result["failed"] else 1)
