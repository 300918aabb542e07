"""The reference site is complete (issue 22): what docs/_gen/hooks.py makes
``mkdocs build --strict`` fail on, asserted without building the site, and shown to
fail when something is missing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import griffe
import pytest

from tests.docs.snippets import ROOT, reference

REF = reference()


def test_every_public_name_field_and_setting_is_documented() -> None:
    assert REF.api_problems() == []
    assert REF.docstring_problems() == []
    assert REF.settings_problems() == []


def test_the_sandbox_page_covers_every_endpoint_and_fault_kind() -> None:
    page = (ROOT / "docs" / "sandbox.md").read_text(encoding="utf-8")
    assert REF.sandbox_doc_problems(page) == []
    assert {"/_sandbox/payments", "/_sandbox/refunds", "/_sandbox/faults",
            "/_sandbox/reset", "/_sandbox/config"} <= set(REF.control_endpoints())


def test_an_undocumented_field_or_method_is_named(tmp_path: Path) -> None:
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        @dataclass
        class Good:
            """A documented class.

            Attributes:
                a: documented here.
            """

            a: int
            b: int = 0
            """documented under the field."""

            def method(self) -> None:
                """Documented."""

        @dataclass
        class Bad:
            x: int

            def method(self) -> None:
                pass
        '''), encoding="utf-8")
    module = griffe.load("fakepkg", search_paths=[str(tmp_path)], docstring_parser="google")
    good, bad = module["Good"], module["Bad"]
    assert list(REF._undocumented(good, "Good")) == []
    problems = list(REF._undocumented(bad, "Bad"))
    assert len(problems) == 3, problems
    assert [p.split()[0] for p in problems] == ["Bad", "Bad.x", "Bad.method()"]


def test_a_new_public_name_must_be_placed(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway

    monkeypatch.setattr(gateway, "__all__", [*gateway.__all__, "Brand_new"])
    assert any("Brand_new" in p for p in REF.api_problems())


def test_a_new_fault_kind_must_be_described(monkeypatch: pytest.MonkeyPatch) -> None:
    import sandbox.state

    monkeypatch.setattr(sandbox.state, "FAULT_KINDS",
                        (*sandbox.state.FAULT_KINDS, "gremlins", "resp_code_ZZ"))
    problems = REF.fault_problems()
    assert [p.split("'")[1] for p in problems] == ["gremlins", "resp_code_ZZ"]


def test_every_fault_kind_has_a_row() -> None:
    from sandbox.state import FAULT_KINDS

    table = REF.render_fault_kinds()
    for kind in FAULT_KINDS:
        assert f"| `{kind}` | " in table


def test_the_state_diagram_is_the_lifecycle_table() -> None:
    from gateway.lifecycle import ALLOWED

    diagram = REF.render_states()
    for source, targets in ALLOWED.items():
        for target in targets - {source}:
            assert f"    {source.value} --> {target.value}\n" in diagram
    edges = [line for line in diagram.splitlines() if " --> " in line
             and "[*]" not in line]
    assert len(edges) == sum(len(t - {s}) for s, t in ALLOWED.items())


def test_settings_page_lists_every_variable() -> None:
    names = set(REF.all_settings_names())
    assert {"REFUND_GATEWAY_DATABASE_URL", "REFUND_GATEWAY_BALANCE__HMAC_KEY",
            "REFUND_GATEWAY_WECHATPAY__NOTIFY_URL", "REFUND_GATEWAY_BANKCARD__BACK_URL",
            "REFUND_GATEWAY_BALANCE__TIMEOUTS__CONNECT"} <= names
    rendered = REF.render_settings()
    assert "| `REFUND_GATEWAY_BALANCE__TIMEOUTS__CONNECT` | `float` | `1.0` |" in rendered
    assert "| `REFUND_GATEWAY_ALIPAY__TIMEOUTS__CONNECT` | `float` | `3.0` |" in rendered


def test_cli_page_has_every_command() -> None:
    text = REF.render_cli()
    for command in ("refund-gateway db", "refund-gateway refund", "refund-gateway reroute",
                    "refund-gateway sandbox", "refund-gateway reconcile",
                    "refund-gateway demo"):
        assert f"## {command}" in text or f"# {command}" in text, command
    assert "Sentinel.UNSET" not in text
