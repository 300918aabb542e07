"""``refund-gateway receipt``: make receipts, one, several or a reconciliation class of a
day, and ``receipt verify`` to check one. Argument handling and printing only.

    refund-gateway receipt RF... [--format json|html|pdf|all] [--out PATH]
    refund-gateway receipt RF1 RF2 ... [--out DIR]
    refund-gateway receipt --date 2026-11-20 --class refunded-not-received [--out DIR]
    refund-gateway receipt verify FILE.json [--digest HEX]
    refund-gateway receipt verify --digest HEX --refund-id RF... --issued-at ISO

Refund ids start with ``RF``, so a first word that is not a sub-command (``make``,
``verify``) is taken as a refund id. Exit codes: 0 ok / verified, 1 not verified or some
refunds missing, 2 usage or configuration error.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import click

from gateway.errors import GatewayError, RefundNotFound
from gateway.settings import GatewaySettings, load_settings
from gateway.store import RefundStore
from reconciliation.receipts import canonical
from reconciliation.receipts.build import build_receipt, build_unsigned
from reconciliation.receipts.render import FORMATS, render
from reconciliation.receipts.sources import refund_ids_for

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
# CLI spelling (hyphens) -> reconciliation class value (reconciliation.matching.Klass).
CLASSES: Final[dict[str, str]] = {
    "refunded-not-received": "refunded_not_received", "in-transit": "in_transit",
    "amount-mismatch": "amount_mismatch", "duplicate": "duplicate",
    "status-mismatch": "status_mismatch", "paid-twice": "paid_twice"}
DEFAULT_COMMAND: Final = "make"


class ReceiptGroup(click.Group):
    """A group whose default sub-command takes refund ids: ``receipt RF...`` is
    ``receipt make RF...``, while ``receipt verify ...`` stays the sub-command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _settings(ctx: click.Context) -> GatewaySettings:
    app: Any = ctx.find_root().obj
    settings = getattr(app, "settings", None)
    return settings if isinstance(settings, GatewaySettings) else load_settings()


def _store(settings: GatewaySettings) -> RefundStore:
    from gateway.bootstrap import build_store  # noqa: PLC0415 - the store only when needed

    return build_store(settings)


@click.group("receipt", cls=ReceiptGroup, context_settings={"help_option_names":
                                                             ["-h", "--help"]})
def receipt_group() -> None:
    """Transfer receipts (转账回执): where a refund went, signed (HMAC-SHA256).

    refund-gateway receipt REFUND_ID... [--format json|html|pdf|all] [--out PATH];
    refund-gateway receipt --date D --class refunded-not-received [--out DIR];
    refund-gateway receipt verify FILE | --digest HEX --refund-id ID --issued-at T
    """


def _targets(fmt: str | None, out: Path | None, single: bool) -> tuple[list[str], Path | None]:
    """Formats to write and the output path (a file for one refund, else a directory)."""
    if fmt == "all":
        return list(FORMATS), out or Path(".")
    if fmt is None and single and out is not None and out.suffix.lstrip(".") in FORMATS:
        fmt = out.suffix.lstrip(".")
    if fmt is None:
        fmt = "json" if single else "pdf"
    return [fmt], out


@receipt_group.command(DEFAULT_COMMAND)
@click.argument("refund_ids", nargs=-1)
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "all"]), default=None,
              help="Default: json to stdout for one refund (or from --out's suffix); "
                   "pdf for several.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="A file for one refund and one format; else a directory.")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Reconciliation day (with --class).")
@click.option("--class", "klass", type=click.Choice(list(CLASSES)), default=None,
              help="Reconciliation class of that day's items.")
@click.pass_context
def make_command(ctx: click.Context, refund_ids: tuple[str, ...], fmt: str | None,
                 out: Path | None, day: datetime | None, klass: str | None) -> None:
    """Make receipts for REFUND_IDS, or for a reconciliation class of one day."""
    if (day is None) != (klass is None):
        _fail("--date and --class go together")
    if not refund_ids and day is None:
        _fail("give refund ids, or --date D --class CLASS (see --help)")
    try:
        settings = _settings(ctx)
        canonical.key_from_settings(settings)   # fail before any work without a key
        store = _store(settings)
        ids = list(dict.fromkeys(refund_ids))
        if day is not None and klass is not None:
            found = refund_ids_for(store.engine, day.date(), CLASSES[klass])
            if not found:
                click.echo(f"no {klass} items for {day.date().isoformat()}", err=True)
            ids += [i for i in found if i not in ids]
        single = len(ids) == 1 and day is None
        fmts, target = _targets(fmt, out, single)
        missing = _write(store, settings, ids, fmts, target, single)
    except GatewayError as exc:
        _fail(exc.message)
        return
    sys.exit(EXIT_PROBLEM if missing else EXIT_OK)


def _write(store: RefundStore, settings: GatewaySettings, ids: list[str], fmts: list[str],
           target: Path | None, single: bool) -> int:
    missing = 0
    to_stdout = single and target is None and fmts[0] in ("json", "html")
    if target is not None and not (single and len(fmts) == 1):
        target.mkdir(parents=True, exist_ok=True)
    for refund_id in ids:
        try:
            receipt = build_receipt(store, refund_id, settings=settings)
        except RefundNotFound:
            click.echo(f"error: no refund {refund_id}", err=True)
            missing += 1
            continue
        for f in fmts:
            data = render(receipt, f)
            if to_stdout:
                click.echo(data.decode("utf-8"))
                continue
            if single and len(fmts) == 1 and target is not None:
                path = target
                path.parent.mkdir(parents=True, exist_ok=True)
            else:
                path = (target or Path(".")) / f"{refund_id}.{f}"
            path.write_bytes(data)
            click.echo(f"wrote {path}  digest {receipt.digest}", err=to_stdout)
    return missing


@receipt_group.command("verify")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--digest", "typed", default=None, help="The digest printed on a receipt.")
@click.option("--refund-id", default=None, help="With --digest and no FILE.")
@click.option("--issued-at", default=None, help="With --digest and no FILE: the receipt's "
                                               "issue time as printed (ISO-8601).")
@click.pass_context
def verify_command(ctx: click.Context, file: Path | None, typed: str | None,
                   refund_id: str | None, issued_at: str | None) -> None:
    """Check a JSON receipt FILE, or a digest typed from a printed one.

    With FILE and --digest, also checks that the printed digest is the file's. With
    --digest, --refund-id and --issued-at, rebuilds the receipt from the store as of its
    issue time: a mismatch means it was altered, or the refund changed since.
    """
    try:
        key = canonical.key_from_settings(_settings(ctx))
        if file is not None:
            if not file.is_file():
                _fail(f"{file} does not exist")
            result = canonical.verify(file.read_bytes(), key)
            if result.ok and typed is not None and not _same_digest(typed, result.digest):
                result = canonical.VerifyResult(False, "the typed digest is not this "
                                                "file's", result.refund_id, result.digest)
            _report(result.ok, result.reason, result.refund_id)
            return
        if not (typed and refund_id and issued_at):
            _fail("give a JSON receipt FILE, or --digest with --refund-id and --issued-at")
            return
        try:
            moment = datetime.fromisoformat(issued_at)
        except ValueError:
            _fail(f"--issued-at {issued_at!r} is not an ISO-8601 time")
            return
        if moment.tzinfo is None:
            _fail("--issued-at needs its offset, as printed (e.g. +08:00)")
        settings = _settings(ctx)
        receipt = build_unsigned(_store(settings), refund_id,
                                 platform=settings.receipts.platform_name, now=moment)
        ok = canonical.verify_digest(receipt.fields(), typed, key)
        _report(ok, "digest matches the stored refund" if ok else
                "digest does not match: the receipt was altered, or the refund changed "
                "after it was issued", refund_id)
    except RefundNotFound:
        _fail(f"no refund {refund_id}", EXIT_PROBLEM)
    except GatewayError as exc:
        _fail(exc.message)


def _same_digest(typed: str, stated: str | None) -> bool:
    cleaned = "".join(typed.split()).replace("-", "").replace(":", "").lower()
    return stated is not None and cleaned == stated


def _report(ok: bool, reason: str, refund_id: str | None) -> None:
    who = f" {refund_id}" if refund_id else ""
    click.echo(f"{'VERIFIED' if ok else 'NOT VERIFIED'}{who}: {reason}")
    sys.exit(EXIT_OK if ok else EXIT_PROBLEM)


__all__ = ["receipt_group"]
