"""Transfer receipts (转账回执): where a refund went, provably, for customer service.

``build_receipt(gateway_or_store, refund_id)`` reads a refund, its events, a linked
reroute and its reconciliation item into an Ed25519-signed ``Receipt``;
``versions.issue`` keeps every receipt handed out as an immutable version (a change makes
a new version naming the previous one); ``render(receipt, fmt)`` makes JSON / HTML / PDF
bytes; ``verify`` checks a JSON receipt with the published public keys alone
(``signing.keys_document``). The CLI is ``refund-gateway receipt``
(``reconciliation.receipts.cli``). Never calls a channel.
"""

from reconciliation.receipts.build import build_receipt, build_unsigned, sign_receipt
from reconciliation.receipts.canonical import VerifyResult, canonical_json, verify
from reconciliation.receipts.model import Receipt, Situation, StatementRef
from reconciliation.receipts.render import FORMATS, render
from reconciliation.receipts.signing import Signer, key_ring, keys_document
from reconciliation.receipts.sources import statement_ref_from_row
from reconciliation.receipts.versions import Issued, issue

__all__ = [
    "FORMATS",
    "Issued",
    "Receipt",
    "Signer",
    "Situation",
    "StatementRef",
    "VerifyResult",
    "build_receipt",
    "build_unsigned",
    "canonical_json",
    "issue",
    "key_ring",
    "keys_document",
    "render",
    "sign_receipt",
    "statement_ref_from_row",
    "verify",
]
