"""Dependencies point inward (DESIGN.md "Layout"): walk every import and fail on a breach.

gateway -> nothing of ours; adapters -> gateway only (and not each other); reconciliation
-> gateway, adapters; sandbox -> nothing of ours. Each SDK is imported in exactly one
module. The public API is pinned.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"gateway", "adapters", "reconciliation", "sandbox"}
ALLOWED = {
    "gateway": {"gateway"},
    "adapters": {"gateway", "adapters"},
    "reconciliation": {"gateway", "adapters", "reconciliation"},
    "sandbox": {"sandbox"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


# The demo composes the product with its emulator; nothing on the refund path does.
EXCEPTIONS = {("reconciliation/demo.py", "sandbox")}


@pytest.mark.parametrize("package", sorted(OURS))
def test_imports_point_inward(package: str) -> None:
    breaches = []
    for path in package_files(package):
        for name in imports_of(path):
            if (str(path.relative_to(ROOT)), name.split(".")[0]) in EXCEPTIONS:
                continue
            top = name.split(".")[0]
            if top in OURS and top not in ALLOWED[package]:
                breaches.append(f"{path.relative_to(ROOT)} imports {name}")
    assert breaches == []


def test_adapters_do_not_import_each_other() -> None:
    breaches = []
    for path in package_files("adapters"):
        parts = path.relative_to(ROOT / "adapters").parts
        if len(parts) < 2:
            continue
        own = parts[0]
        for name in imports_of(path):
            bits = name.split(".")
            if bits[0] == "adapters" and len(bits) > 1 and bits[1] != own:
                breaches.append(f"{path.relative_to(ROOT)} imports {name}")
    assert breaches == []


@pytest.mark.parametrize("sdk,home", [("alipay", "adapters/alipay/client.py"),
                                      ("wechatpayv3", "adapters/wechatpay/client.py")])
def test_each_sdk_imported_in_one_module(sdk: str, home: str) -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for package in ("gateway", "adapters", "reconciliation")
        for path in package_files(package)
        if any(name.split(".")[0] == sdk for name in imports_of(path)))
    assert users in ([], [home])


def test_public_api_is_pinned() -> None:
    import gateway

    assert sorted(gateway.__all__) == [
        "AbnormalRefundInstruction", "AbnormalTarget", "ArrivalWindow", "Capabilities",
        "ChannelAdapter", "ChannelAuthError", "ChannelError", "ChannelResult",
        "ChannelStatus", "ChannelUnavailable", "ConfigurationError", "GatewayError",
        "GatewaySettings", "IdempotencyConflict", "InvalidRequest", "Money",
        "NotificationAck", "OutboxEvent", "OutcomeUnknown", "OverRefund", "Payment", "Refund",
        "RefundEvent", "RefundGateway", "RefundNotFound", "RefundRequest", "RefundStatus",
        "RerouteRefused", "ResolveReport", "Route", "SignatureInvalid", "StatementError",
        "StoreUnavailable", "load_settings"]
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None
    # The names DESIGN.md promises to the refund service.
    from gateway import RefundGateway

    for method in ("refund", "get", "sync", "resolve_due", "reroute", "handle_notification",
                   "from_settings"):
        assert callable(getattr(RefundGateway, method))


def test_error_tree_retry_semantics() -> None:
    from gateway import errors as e

    assert issubclass(e.OutcomeUnknown, e.ChannelError)
    assert (e.ChannelUnavailable.retryable, e.ChannelUnavailable.resubmit_safe) == (True, True)
    assert (e.OutcomeUnknown.retryable, e.OutcomeUnknown.resubmit_safe) == (True, False)
    # nothing was sent when the store failed first: the same request may simply be retried
    assert (e.StoreUnavailable.retryable, e.StoreUnavailable.resubmit_safe) == (True, True)
    assert issubclass(e.RerouteRefused, e.InvalidRequest)
    for cls in (e.ChannelAuthError, e.SignatureInvalid, e.InvalidRequest, e.OverRefund,
                e.IdempotencyConflict, e.ConfigurationError, e.StatementError):
        assert not cls.retryable and not cls.resubmit_safe


def test_nothing_reads_settings_at_import_time() -> None:
    """Importing every core module must not construct settings or engines."""
    tree_calls = []
    for path in package_files("gateway"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.Expr) and isinstance(
                    getattr(node, "value", None), ast.Call):
                func = node.value.func  # type: ignore[union-attr]
                name = getattr(func, "id", getattr(func, "attr", ""))
                if name in {"load_settings", "GatewaySettings", "make_engine",
                            "create_engine", "build_gateway"}:
                    tree_calls.append(f"{path.relative_to(ROOT)}: {name}")
    assert tree_calls == []


def test_the_migrations_have_one_head() -> None:
    """Several migrations written at once must still form one chain: two heads make
    ``upgrade(engine)`` refuse to run (``MultipleHeads``) on every fresh database."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from gateway.store.engine import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1
