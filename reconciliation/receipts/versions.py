"""Receipts as immutable versions: ``issue`` returns the refund's current receipt, the
stored one when nothing changed, else a new version that names the previous one.

Each version is stored once (``receipt_versions``) as the exact JSON bytes that were
handed out, with the SHA-256 a printed receipt shows; nothing is ever updated, so every
receipt ever printed stays verifiable after the refund or its reconciliation item moves
on (issue 18: finance resolving an item broke every receipt printed before). Two issuers
racing for the same version number: one insert wins, the other reads the winner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from gateway.clock import utcnow
from gateway.errors import GatewayError
from gateway.store import RefundStore
from reconciliation.receipts import canonical
from reconciliation.receipts.build import build_unsigned, iso, sign_receipt
from reconciliation.receipts.model import PreviousVersion, Receipt, Signature
from reconciliation.receipts.render import render_json
from reconciliation.receipts.schema import receipt_versions
from reconciliation.receipts.signing import Signer

_RACE_RETRIES: Final = 3


@dataclass(frozen=True, slots=True)
class Issued:
    """A receipt version and whether this call created it."""

    receipt: Receipt
    body: bytes          # the JSON receipt, exactly as stored
    created: bool


@dataclass(frozen=True, slots=True)
class StoredVersion:
    refund_id: str
    version: int
    sha256: str
    key_id: str
    issued_at: datetime
    body: bytes


def _stored(row: Mapping[str, Any]) -> StoredVersion:
    return StoredVersion(row["refund_id"], int(row["version"]), row["sha256"], row["key_id"],
                         row["issued_at"], str(row["body"]).encode("utf-8"))


def latest(engine: Engine, refund_id: str) -> StoredVersion | None:
    rv = receipt_versions.c
    with engine.connect() as conn:
        row = conn.execute(select(receipt_versions).where(rv.refund_id == refund_id)
                           .order_by(rv.version.desc()).limit(1)).first()
    return _stored(dict(row._mapping)) if row is not None else None


def by_digest(engine: Engine, sha256: str) -> StoredVersion | None:
    with engine.connect() as conn:
        row = conn.execute(select(receipt_versions)
                           .where(receipt_versions.c.sha256 == sha256)).first()
    return _stored(dict(row._mapping)) if row is not None else None


def history(engine: Engine, refund_id: str) -> list[StoredVersion]:
    rv = receipt_versions.c
    with engine.connect() as conn:
        rows = conn.execute(select(receipt_versions).where(rv.refund_id == refund_id)
                            .order_by(rv.version)).all()
    return [_stored(dict(r._mapping)) for r in rows]


def _content_sha(engine: Engine, refund_id: str, version: int) -> str | None:
    rv = receipt_versions.c
    with engine.connect() as conn:
        return conn.execute(select(rv.content_sha256).where(
            rv.refund_id == refund_id, rv.version == version)).scalar_one_or_none()


def issue(store: RefundStore, refund_id: str, signer: Signer, *,
          platform: str = "refund-gateway", now: datetime | None = None) -> Issued:
    """The refund's receipt as of now: the latest stored version when its content is
    unchanged (same bytes, same digest), else version N+1 naming version N."""
    for _ in range(_RACE_RETRIES):
        current = build_unsigned(store, refund_id, platform=platform, now=None)
        last = latest(store.engine, refund_id)
        content_sha = current.content_sha256()
        if last is not None and _content_sha(store.engine, refund_id,
                                             last.version) == content_sha:
            same = current.as_version(last.version, _previous(store.engine, refund_id,
                                                              last.version),
                                      iso(last.issued_at) or "")
            same = same.with_signature(Signature(**json.loads(last.body)[
                canonical.SIGNATURE_FIELD]))
            if render_json(same) == last.body:
                return Issued(same, last.body, created=False)
        moment = (now or utcnow()).replace(microsecond=0)
        previous = None if last is None else PreviousVersion(
            last.version, last.sha256, iso(last.issued_at) or "")
        receipt = sign_receipt(current.as_version(
            1 if last is None else last.version + 1, previous, iso(moment) or ""), signer)
        body = render_json(receipt)
        sig = receipt.signature
        if sig is None:
            raise GatewayError(f"the receipt of {refund_id} was not signed")
        try:
            with store.engine.begin() as conn:
                conn.execute(insert(receipt_versions).values(
                    refund_id=refund_id, version=receipt.version, sha256=sig.sha256,
                    content_sha256=content_sha,
                    previous_sha256=previous.sha256 if previous else None, alg=sig.alg,
                    key_id=sig.key_id, issued_at=moment, body=body.decode("utf-8")))
        except IntegrityError:
            continue    # another issuer stored this version first: read it again
        return Issued(receipt, body, created=True)
    raise GatewayError(f"could not store a receipt version of {refund_id} (other issuers "
                       "kept taking the version number)")


def _previous(engine: Engine, refund_id: str, version: int) -> PreviousVersion | None:
    if version <= 1:
        return None
    rv = receipt_versions.c
    with engine.connect() as conn:
        row = conn.execute(select(rv.version, rv.sha256, rv.issued_at).where(
            rv.refund_id == refund_id, rv.version == version - 1)).first()
    return None if row is None else PreviousVersion(int(row.version), row.sha256,
                                                    iso(row.issued_at) or "")
