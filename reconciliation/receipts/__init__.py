"""Transfer receipts (转账回执): where a refund went, provably, for customer service.

``build_receipt(gateway_or_store, refund_id)`` reads a refund, its events, a linked
reroute and its reconciliation item into a signed ``Receipt``; ``render(receipt, fmt)``
makes JSON / HTML / PDF bytes; ``verify`` and ``verify_digest`` check them. The CLI is
``refund-gateway receipt`` (``reconciliation.receipts.cli``). Reads only; never a channel.
"""

from reconciliation.receipts.build import build_receipt, build_unsigned
from reconciliation.receipts.canonical import canonical_json, digest, verify, verify_digest
from reconciliation.receipts.model import Receipt, Situation, StatementRef
from reconciliation.receipts.render import FORMATS, render
from reconciliation.receipts.sources import statement_ref_from_row

__all__ = [
    "FORMATS",
    "Receipt",
    "Situation",
    "StatementRef",
    "build_receipt",
    "build_unsigned",
    "canonical_json",
    "digest",
    "render",
    "statement_ref_from_row",
    "verify",
    "verify_digest",
]
