"""``refund-gateway receipt``: make receipts (one, several, or a reconciliation class of a
day), ``receipt verify`` to check one, ``receipt keys`` to publish the public keys.
Argument handling and printing only.

    refund-gateway receipt RF... [--format json|html|pdf|all] [--out PATH] [--json]
    refund-gateway receipt --date 2026-11-20 --class refunded-not-received [--out DIR]
    refund-gateway receipt verify FILE.json [--keys KEYS.json | --public-key PEM] [--json]
    refund-gateway receipt verify --digest HEX [--json]          # a printed receipt
    refund-gateway receipt keys [--out KEYS.json]

Making a receipt issues a version (``versions.issue``): the stored one when nothing
changed, else a new one naming the previous. ``verify FILE`` needs only public keys (the
published ``receipt keys`` document, one public key, or the settings); no database.
``verify --digest`` finds the version a printed receipt shows in the database. JSON
receipts issued before Ed25519 (v1, HMAC) verify with ``REFUND_GATEWAY_RECEIPTS__HMAC_KEY``.

``--json`` (here or before the command) prints one JSON document on stdout, whose
``schema`` names it: ``refund-gateway/cli/receipt/v1`` (made: per refund its version,
digest, key id, whether new, files written, and the receipt itself when no file was
asked for; ``missing`` ids), ``refund-gateway/cli/receipt-verify/v1`` (``verified``,
``reason``, ``method``, the receipt's refund id, version, digest, alg, key id; for a
digest, ``latest_version``), ``refund-gateway/receipt-keys/v1`` (``keys``). Errors under
``--json``: ``{"schema", "error", "exit_code"}``. Exit codes: 0 ok / verified, 1 not
verified or some refunds missing, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from gateway.errors import ConfigurationError, GatewayError, RefundNotFound
from gateway.settings import GatewaySettings, load_settings
from gateway.store import RefundStore
from reconciliation.receipts import canonical, signing, versions
from reconciliation.receipts.canonical import VerifyResult
from reconciliation.receipts.render import FORMATS, render
from reconciliation.receipts.sources import refund_ids_for

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
MAKE_SCHEMA: Final = "refund-gateway/cli/receipt/v1"
VERIFY_SCHEMA: Final = "refund-gateway/cli/receipt-verify/v1"
# CLI spelling (hyphens) -> reconciliation class value (reconciliation.matching.Klass).
CLASSES: Final[dict[str, str]] = {
    "refunded-not-received": "refunded_not_received", "in-transit": "in_transit",
    "amount-mismatch": "amount_mismatch", "duplicate": "duplicate",
    "status-mismatch": "status_mismatch", "paid-twice": "paid_twice",
    "matched": "matched"}
DEFAULT_COMMAND: Final = "make"


class ReceiptGroup(click.Group):
    """A group whose default sub-command takes refund ids: ``receipt RF...`` is
    ``receipt make RF...``, while ``receipt verify ...`` stays the sub-command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


def _as_json(ctx: click.Context, local: bool) -> bool:
    return local or bool(getattr(ctx.find_root().obj, "as_json", False))


def _emit(doc: Mapping[str, Any]) -> None:
    click.echo(json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True))


def _fail(message: str, code: int = EXIT_USAGE, *, as_json: bool = False,
          schema: str = MAKE_SCHEMA) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if as_json:
        _emit({"schema": schema, "error": message, "exit_code": code})
    sys.exit(code)


def _settings(ctx: click.Context) -> GatewaySettings:
    app: Any = ctx.find_root().obj
    settings = getattr(app, "settings", None)
    return settings if isinstance(settings, GatewaySettings) else load_settings()


def _store(settings: GatewaySettings) -> RefundStore:
    from gateway.bootstrap import build_store  # noqa: PLC0415 - the store only when needed

    return build_store(settings)


def _database(store: RefundStore) -> str:
    return store.engine.url.render_as_string(hide_password=True)


@click.group("receipt", cls=ReceiptGroup, context_settings={"help_option_names":
                                                             ["-h", "--help"]})
def receipt_group() -> None:
    """Transfer receipts (转账回执): where a refund went, signed (Ed25519), versioned.

    refund-gateway receipt REFUND_ID... [--format json|html|pdf|all] [--out PATH];
    refund-gateway receipt --date D --class refunded-not-received [--out DIR];
    refund-gateway receipt verify FILE [--keys KEYS.json] | --digest HEX;
    refund-gateway receipt keys
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
@click.option("--json", "local_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def make_command(ctx: click.Context, refund_ids: tuple[str, ...], fmt: str | None,
                 out: Path | None, day: datetime | None, klass: str | None,
                 local_json: bool) -> None:
    """Make receipts for REFUND_IDS, or for a reconciliation class of one day."""
    as_json = _as_json(ctx, local_json)
    if (day is None) != (klass is None):
        _fail("--date and --class go together", as_json=as_json)
    if not refund_ids and day is None:
        _fail("give refund ids, or --date D --class CLASS (see --help)", as_json=as_json)
    try:
        settings = _settings(ctx)
        signer = signing.signer_from_settings(settings)   # fail before any work
        store = _store(settings)
        ids = list(dict.fromkeys(refund_ids))
        if day is not None and klass is not None:
            found = refund_ids_for(store.engine, day.date(), CLASSES[klass])
            if not found:
                click.echo(f"no {klass} items for {day.date().isoformat()}", err=True)
            ids += [i for i in found if i not in ids]
        single = len(ids) == 1 and day is None
        fmts, target = _targets(fmt, out, single)
        made, missing = _write(store, settings, signer, ids, fmts, target, single, as_json)
    except GatewayError as exc:
        _fail(exc.message, as_json=as_json)
    code = EXIT_PROBLEM if missing else EXIT_OK
    if as_json:
        _emit({"schema": MAKE_SCHEMA, "database": _database(store), "receipts": made,
               "missing": missing, "exit_code": code})
    sys.exit(code)


def _write(store: RefundStore, settings: GatewaySettings, signer: signing.Signer,
           ids: list[str], fmts: list[str], target: Path | None, single: bool,
           as_json: bool) -> tuple[list[dict[str, Any]], list[str]]:
    made: list[dict[str, Any]] = []
    missing: list[str] = []
    to_stdout = single and target is None and fmts[0] in ("json", "html")
    if target is not None and not (single and len(fmts) == 1):
        target.mkdir(parents=True, exist_ok=True)
    for refund_id in ids:
        try:
            issued = versions.issue(store, refund_id, signer,
                                    platform=settings.receipts.platform_name)
        except RefundNotFound:
            click.echo(f"error: no refund {refund_id}", err=True)
            missing.append(refund_id)
            continue
        receipt = issued.receipt
        entry: dict[str, Any] = {
            "refund_id": refund_id, "version": receipt.version, "new_version": issued.created,
            "sha256": receipt.digest, "key_id": receipt.signature.key_id
            if receipt.signature else None, "previous_sha256":
            receipt.previous.sha256 if receipt.previous else None, "files": []}
        for f in fmts:
            data = issued.body if f == "json" else render(receipt, f)
            if to_stdout:
                if as_json and f == "json":
                    entry["receipt"] = json.loads(data)
                elif as_json:
                    entry["html"] = data.decode("utf-8")
                else:
                    click.echo(data.decode("utf-8"))
                continue
            if single and len(fmts) == 1 and target is not None:
                path = target
                path.parent.mkdir(parents=True, exist_ok=True)
            else:
                path = (target or Path(".")) / f"{refund_id}.{f}"
            path.write_bytes(data)
            entry["files"].append(str(path))
            if not as_json:
                click.echo(f"wrote {path}  version {receipt.version}  sha256 "
                           f"{receipt.digest}", err=to_stdout)
        made.append(entry)
    return made, missing


# -- verify -----------------------------------------------------------------------------
def _ring(ctx: click.Context, keys: Path | None, public_key: str | None,
          key_id: str | None) -> dict[str, signing.PublicKey]:
    """The verifying keys: --keys / --public-key when given (nothing else is read),
    else the settings' (current signing key's public half and the earlier ones)."""
    if keys is not None:
        if not keys.is_file():
            raise ConfigurationError(f"{keys} does not exist", setting="--keys")
        return signing.ring_from_text(keys.read_text(encoding="utf-8"))
    if public_key is not None:
        path = Path(public_key)
        text = path.read_text(encoding="utf-8") if len(public_key) < 4096 and \
            path.is_file() else public_key
        return signing.ring_from_text(text, key_id=key_id)
    return signing.key_ring(_settings(ctx))


@receipt_group.command("verify")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keys", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The published public keys (`receipt keys` JSON).")
@click.option("--public-key", default=None,
              help="One public key: a PEM file, PEM text or the 32 bytes in base64.")
@click.option("--key-id", default=None, help="With --public-key: its key id (default: "
                                              "derived from the key).")
@click.option("--digest", "typed", default=None, help="The digest printed on a receipt.")
@click.option("--json", "local_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def verify_command(ctx: click.Context, file: Path | None, keys: Path | None,
                   public_key: str | None, key_id: str | None, typed: str | None,
                   local_json: bool) -> None:
    """Check a JSON receipt FILE (public keys only), or a digest typed from a printed one.

    With FILE and --digest, also checks that the printed digest is the file's. With
    --digest alone, finds the version it names among the receipts issued (database).
    """
    as_json = _as_json(ctx, local_json)
    try:
        if file is not None:
            if not file.is_file():
                _fail(f"{file} does not exist", as_json=as_json, schema=VERIFY_SCHEMA)
            ring = _ring(ctx, keys, public_key, key_id)
            hmac_key = canonical.hmac_key_of(_settings(ctx)) if keys is None and \
                public_key is None else None
            result = canonical.verify(file.read_bytes(), ring, hmac_key=hmac_key)
            if result.ok and typed is not None and canonical.clean_digest(typed) != \
                    result.digest:
                result = VerifyResult(False, "the typed digest is not this file's",
                                      result.refund_id, result.digest, result.alg,
                                      result.key_id, result.version, result.schema)
            _report(result, "file", None, as_json)
        if not typed:
            _fail("give a JSON receipt FILE, or --digest from a printed receipt",
                  as_json=as_json, schema=VERIFY_SCHEMA)
        _verify_printed(ctx, typed, keys, public_key, key_id, as_json)
    except GatewayError as exc:
        _fail(exc.message, as_json=as_json, schema=VERIFY_SCHEMA)


def _verify_printed(ctx: click.Context, typed: str, keys: Path | None,
                    public_key: str | None, key_id: str | None, as_json: bool) -> None:
    """A v2 printed receipt: its digest names one stored version; that version's bytes
    are checked like a file, and the newest version of the refund is named."""
    digest = canonical.clean_digest(typed)
    if digest is None:
        _fail("--digest is not 64 hex digits", as_json=as_json, schema=VERIFY_SCHEMA)
    store = _store(_settings(ctx))
    stored = versions.by_digest(store.engine, digest)
    if stored is None:
        result = VerifyResult(False, "no receipt with this digest was issued here",
                              digest=digest)
        _report(result, "digest", _database(store), as_json)
    result = canonical.verify(stored.body, _ring(ctx, keys, public_key, key_id))
    newest = versions.latest(store.engine, stored.refund_id)
    extra: dict[str, Any] = {"latest_version": newest.version if newest else None}
    if result.ok and newest is not None and newest.version > stored.version:
        result = VerifyResult(True, f"{result.reason}; version {stored.version} of "
                              f"{newest.version}: a later version replaces it",
                              result.refund_id, result.digest, result.alg, result.key_id,
                              result.version, result.schema)
    _report(result, "digest", _database(store), as_json, extra)


def _report(result: VerifyResult, method: str, database: str | None, as_json: bool,
            extra: Mapping[str, Any] | None = None) -> NoReturn:
    code = EXIT_OK if result.ok else EXIT_PROBLEM
    if as_json:
        doc = result.to_dict()
        doc["receipt_schema"] = doc.pop("schema")
        doc["verified"] = doc.pop("ok")
        _emit({"schema": VERIFY_SCHEMA, **doc, "method": method, "database": database,
               "latest_version": None, **(extra or {}), "exit_code": code})
    else:
        who = f" {result.refund_id}" if result.refund_id else ""
        version = f" version {result.version}" if result.version else ""
        click.echo(f"{'VERIFIED' if result.ok else 'NOT VERIFIED'}{who}{version}: "
                   f"{result.reason}")
    sys.exit(code)


# -- keys -------------------------------------------------------------------------------
@receipt_group.command("keys")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the document here instead of stdout.")
@click.pass_context
def keys_command(ctx: click.Context, out: Path | None) -> None:
    """Publish the public keys receipts verify with (JSON; no secret in it)."""
    try:
        doc = signing.keys_document(_settings(ctx))
    except GatewayError as exc:
        _fail(exc.message, as_json=True, schema=signing.KEYS_SCHEMA)
    text = json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True)
    if out is None:
        click.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {out}", err=True)
    sys.exit(EXIT_OK)


__all__ = ["receipt_group"]
