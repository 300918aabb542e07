"""Reference pages generated from the code, so the site cannot drift from it (issue 22).

Each ``render_*`` function returns Markdown for one ``<!-- generated: NAME -->`` marker
(docs/_gen/hooks.py puts it in the page); each ``*_problems`` function returns what is
missing (a public name, field or setting without a docstring, a sandbox fault kind the
page does not describe), which the hook logs as warnings, so ``mkdocs build --strict``
fails on it; tests/docs/ asserts the same without building the site.

Imports the project lazily (a generator imports what it documents), never at import time.
"""

# Imports are lazy on purpose (the project is imported when a page is built, not when
# the hook loads); asserts narrow importlib's optional results.
# ruff: noqa: PLC0415, S101

from __future__ import annotations

import functools
import importlib.util
import inspect
import re
import types
import typing
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[2]

# -- the public API ---------------------------------------------------------------------

# The API page's sections: every name of gateway.__all__ must be in exactly one
# (api_problems says which are not), in the order a refund service meets them.
API_SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("The gateway", "The one object a refund service talks to, and a resolver cycle's "
     "report.", ("RefundGateway", "ResolveReport")),
    ("Money", "Integer minor units; strings only at the edges.", ("Money",)),
    ("Requests and refunds", "What you send and what you get back.",
     ("Route", "Payment", "RefundRequest", "Refund", "RefundStatus", "ArrivalWindow",
      "RefundEvent")),
    ("Notifications", "What to answer a channel's HTTP notification with.",
     ("NotificationAck",)),
    ("Events", "Every status change, in order, for services that follow refunds "
     "(`RefundGateway.events_since`, `RefundGateway.subscribe`).", ("OutboxEvent",)),
    ("Abnormal refunds", "WeChat Pay's own abnormal-refund API (CH §5.6), through "
     "`RefundGateway.reroute(..., instruction=...)`.",
     ("AbnormalRefundInstruction", "AbnormalTarget")),
    ("Settings", "Every variable is listed on the [Settings](settings.md) page.",
     ("GatewaySettings", "load_settings")),
    ("Errors", "What each means and what to do: the [Errors](errors.md) page.",
     ("GatewayError", "ConfigurationError", "InvalidRequest", "RerouteRefused",
      "StoreUnavailable", "OverRefund", "IdempotencyConflict", "RefundNotFound",
      "ChannelError", "ChannelUnavailable", "OutcomeUnknown", "ChannelAuthError",
      "SignatureInvalid", "StatementError")),
    ("Writing a route adapter", "The channel port a fifth route implements.",
     ("ChannelAdapter", "Capabilities", "ChannelResult", "ChannelStatus")),
)
# Documented on the Errors page (their attributes there), listed on the API page.
_ERROR_SECTION = "Errors"


def _public_names() -> list[str]:
    import gateway

    return list(gateway.__all__)


def api_problems() -> list[str]:
    """Names of ``gateway.__all__`` placed in no section (or in two), or unknown ones."""
    names = _public_names()
    placed = [n for _, _, members in API_SECTIONS for n in members]
    problems = [f"gateway.{n} is public but on no section of docs/api.md "
                f"(docs/_gen/reference.py API_SECTIONS)" for n in names if n not in placed]
    problems += [f"API_SECTIONS lists {n}, which is not in gateway.__all__"
                 for n in placed if n not in names]
    problems += [f"API_SECTIONS lists {n} twice" for n in sorted(set(placed))
                 if placed.count(n) > 1]
    return problems


def render_api() -> str:
    out: list[str] = []
    names = set(_public_names())
    for title, intro, members in API_SECTIONS:
        out += [f"## {title}", "", intro, ""]
        if title == _ERROR_SECTION:
            out += [", ".join(f"[`{n}`](errors.md#gateway.errors.{n})" for n in members
                              if n in names), ""]
            continue
        for name in members:
            if name in names:
                out += [f"::: gateway.{name}", "    options:", "      heading_level: 3", ""]
    return "\n".join(out)


@functools.cache
def _package(name: str) -> griffe.Module:
    loaded = griffe.load(name, search_paths=[str(ROOT)], docstring_parser="google",
                         resolve_aliases=False)
    assert isinstance(loaded, griffe.Module)
    return loaded


def documented_fields(cls: griffe.Class) -> set[str]:
    """Field names a class documents: its docstring's Attributes section, plus attributes
    that carry their own docstring."""
    names = {n for n, m in cls.members.items() if m.docstring and m.docstring.value.strip()}
    if cls.docstring is not None:
        for section in cls.docstring.parsed:
            if section.kind is griffe.DocstringSectionKind.attributes:
                names |= {attr.name for attr in section.value}
    return names


# Framework attributes, not fields of ours (pydantic's model configuration).
_NOT_FIELDS = frozenset({"model_config"})


def _undocumented(cls: griffe.Class, where: str) -> Iterator[str]:
    if cls.docstring is None or not cls.docstring.value.strip():
        yield f"{where} has no docstring"
    fields = documented_fields(cls)
    for base in cls.mro():   # an override of a documented base attribute (retryable)
        fields |= documented_fields(base)
    for name, member in cls.members.items():
        if name.startswith("_") or member.is_alias or name in _NOT_FIELDS:
            continue
        if member.is_function:
            if not (member.docstring and member.docstring.value.strip()):
                yield f"{where}.{name}() has no docstring"
        elif member.is_attribute and name not in fields:
            yield (f"{where}.{name} is not documented (an Attributes: entry in the class "
                   f"docstring, or a docstring under the field)")


def docstring_problems() -> list[str]:
    """Every public name of ``gateway``, its public methods and its fields documented."""
    module = _package("gateway")
    problems: list[str] = []
    for name in _public_names():
        obj = module[name]
        target = obj.final_target if obj.is_alias else obj
        if isinstance(target, griffe.Class):
            problems += _undocumented(target, f"gateway.{name}")
        elif not (target.docstring and target.docstring.value.strip()):
            problems.append(f"gateway.{name} has no docstring")
    return problems


# -- settings ---------------------------------------------------------------------------

def _model_of(annotation: Any) -> type | None:
    """The pydantic model a field holds (``X`` or ``X | None``), else None."""
    from pydantic import BaseModel

    candidates = typing.get_args(annotation) if isinstance(
        annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union \
        else (annotation,)
    for candidate in candidates:
        if inspect.isclass(candidate) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    text = annotation.__name__ if inspect.isclass(annotation) else str(annotation)
    text = text.replace("typing.", "").replace("pydantic.types.", "")
    return re.sub(r"\bNoneType\b", "None", text)


def _default(field: Any) -> str:
    from pydantic import BaseModel, SecretStr
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, SecretStr | BaseModel):
        return ""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value != {} else "empty"


def _nested_default(field: Any, defaults: Any, name: str) -> Any:
    """The default instance of a nested group (``BalanceSettings.timeouts`` is
    ``Timeouts(connect=1.0, read=5.0)``), None when the group is required or unset."""
    if defaults is not None:
        return getattr(defaults, name, None)
    if field.is_required():
        return None
    return field.get_default(call_default_factory=True)


def _settings_rows(model: type, prefix: str, docs: dict[str, griffe.Class],
                   problems: list[str], defaults: Any = None
                   ) -> Iterator[tuple[str, str, str, str]]:
    cls = docs[model.__name__]
    documented = documented_fields(cls)
    descriptions = _field_descriptions(cls)
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        env = f"{prefix}{name.upper()}"
        if name not in documented:
            problems.append(f"setting {env} ({model.__name__}.{name}) is not documented")
        nested = _model_of(field.annotation)
        if nested is not None:
            yield from _settings_rows(nested, f"{env}__", docs, problems,
                                      _nested_default(field, defaults, name))
            continue
        default = _default(field)
        if defaults is not None and hasattr(defaults, name):
            value = getattr(defaults, name)
            default = "unset" if value is None else f"`{value}`"
        yield env, _type_name(field.annotation), default, descriptions.get(name, "")


def _field_descriptions(cls: griffe.Class) -> dict[str, str]:
    out = {n: " ".join(m.docstring.value.split()) for n, m in cls.members.items()
           if m.docstring and m.docstring.value.strip()}
    if cls.docstring is not None:
        for section in cls.docstring.parsed:
            if section.kind is griffe.DocstringSectionKind.attributes:
                for attr in section.value:
                    out.setdefault(attr.name, " ".join(attr.description.split()))
    return out


def settings_problems() -> list[str]:
    problems: list[str] = []
    list(_all_settings(problems))
    return problems


def _all_settings(problems: list[str]
                  ) -> Iterator[tuple[str, list[tuple[str, str, str, str]]]]:
    """(section title, rows) for the settings page: the top-level settings, then one
    section per nested group (a route, retries, the resolver, receipts)."""
    from gateway.settings import GatewaySettings

    module = _package("gateway")["settings"]
    docs = {n: m for n, m in module.members.items() if isinstance(m, griffe.Class)}
    top: list[tuple[str, str, str, str]] = []
    groups: list[tuple[str, list[tuple[str, str, str, str]]]] = []
    documented = documented_fields(docs["GatewaySettings"])
    descriptions = _field_descriptions(docs["GatewaySettings"])
    for name, field in GatewaySettings.model_fields.items():
        env = f"REFUND_GATEWAY_{name.upper()}"
        if name not in documented:
            problems.append(f"setting {env} (GatewaySettings.{name}) is not documented")
        nested = _model_of(field.annotation)
        if nested is None:
            top.append((env, _type_name(field.annotation), _default(field),
                        descriptions.get(name, "")))
            continue
        title = f"`{env}__...`: {descriptions.get(name, name)}"
        default = None if field.is_required() else field.get_default(
            call_default_factory=True)
        groups.append((title, list(_settings_rows(nested, f"{env}__", docs, problems,
                                                  default))))
    yield "Top level", top
    yield from groups


def all_settings_names() -> list[str]:
    """Every ``REFUND_GATEWAY_...`` variable the settings page lists."""
    return [row[0] for _, rows in _all_settings([]) for row in rows]


def render_settings() -> str:
    out: list[str] = []
    for title, rows in _all_settings([]):
        out += [f"### {title}", "", "| variable | type | default | meaning |",
                "|---|---|---|---|"]
        for env, type_, default, meaning in rows:
            out.append(f"| `{env}` | `{type_}` | {default} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- errors -----------------------------------------------------------------------------

def _error_classes() -> list[tuple[int, type]]:
    from gateway import errors

    out: list[tuple[int, type]] = []

    def walk(cls: type, depth: int) -> None:
        out.append((depth, cls))
        subs = [c for c in cls.__subclasses__() if c.__module__ == errors.__name__]
        for sub in sorted(subs, key=lambda c: inspect.getsourcelines(c)[1]):
            walk(sub, depth + 1)

    walk(errors.GatewayError, 0)
    return out


def render_error_tree() -> str:
    lines = ["```text"]
    for depth, cls in _error_classes():
        flags = []
        if getattr(cls, "retryable", False):
            flags.append("retryable")
        if getattr(cls, "resubmit_safe", False):
            flags.append("resubmit_safe")
        label = ("    " * depth + cls.__name__).ljust(34)
        lines.append(f"{label}{', '.join(flags)}".rstrip())
    lines += ["```", "", "| error | retry? | resend the same refund without asking? | "
              "what it means and what to do |", "|---|---|---|---|"]
    for _, cls in _error_classes():
        doc = inspect.getdoc(cls) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        lines.append(f"| [`{cls.__name__}`](#gateway.errors.{cls.__name__}) | "
                     f"{'yes' if cls.retryable else 'no'} | "  # type: ignore[attr-defined]
                     f"{'yes' if cls.resubmit_safe else 'no'} | "  # type: ignore[attr-defined]
                     f"{_cell(first)} |")
    lines.append("")
    for _, cls in _error_classes():
        lines += [f"::: gateway.errors.{cls.__name__}", "    options:",
                  "      heading_level: 3", "      show_bases: true", ""]
    return "\n".join(lines)


# -- refund states ----------------------------------------------------------------------

def render_states() -> str:
    from gateway.lifecycle import ALLOWED
    from gateway.models import RefundStatus

    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {RefundStatus.PENDING.value}"]
    for source, targets in ALLOWED.items():
        for target in sorted(targets, key=list(RefundStatus).index):
            if target is not source:
                lines.append(f"    {source.value} --> {target.value}")
        if not targets or targets == {source}:
            lines.append(f"    {source.value} --> [*]")
    lines += ["```", "", "| from | may become | final? | counts against the payment? |",
              "|---|---|---|---|"]
    for source, targets in ALLOWED.items():
        others = [t.value for t in sorted(targets, key=list(RefundStatus).index)
                  if t is not source]
        lines.append(f"| `{source.value}` | {', '.join(f'`{t}`' for t in others) or '-'} | "
                     f"{'yes' if source.is_final else 'no'} | "
                     f"{'yes' if source.counts_against_payment else 'no (released)'} |")
    return "\n".join(lines) + "\n"


# -- the CLI ----------------------------------------------------------------------------

def _cli_commands() -> list[tuple[str, str, str]]:
    """(name, module, attribute) of every ``refund-gateway`` sub-command, core and
    contributed through the ``refund_gateway.cli`` entry points."""
    import click

    from gateway import cli

    found: dict[str, tuple[str, str]] = {}
    for attr, value in vars(cli).items():
        if isinstance(value, click.Command) and value.name in cli.main.commands \
                and cli.main.commands[value.name] is value:
            found[value.name] = ("gateway.cli", attr)
    for ep in entry_points(group="refund_gateway.cli"):
        module, _, attr = ep.value.partition(":")
        found.setdefault(ep.name, (module, attr))
    return [(name, *found[name]) for name in sorted(found)]


def render_cli() -> str:
    """Markdown for ``refund-gateway`` and each sub-command, by mkdocs-click (called
    directly: its ``::: mkdocs-click`` directive collides with mkdocstrings' syntax)."""
    import importlib

    import click
    from mkdocs_click._docs import make_command_docs

    from gateway import cli

    out = list(make_command_docs("refund-gateway", cli.main, depth=1, style="table",
                                 has_attr_list=True))
    out.append("")
    for name, module, attr in _cli_commands():
        try:
            command = getattr(importlib.import_module(module), attr)
        except ImportError:
            continue   # as the CLI itself does (gateway.cli.PluginGroup): not installed
        if not isinstance(command, click.Command):
            continue
        out += list(make_command_docs(f"refund-gateway {name}", command, depth=1,
                                      style="table", has_attr_list=True))
        out.append("")
    return "\n".join(_plain_help(out))


def _plain_help(lines: list[str]) -> Iterator[str]:
    """Help text as text: ``[--out PATH]`` outside code is not a Markdown reference
    link, and click 8.3's "no default" sentinel is no default."""
    in_code = False
    for raw in lines:
        if raw.startswith("```"):
            in_code = not in_code
        if in_code or raw.startswith("#"):
            yield raw
            continue
        parts = raw.split("`")
        text = "`".join(p.replace("[", "\\[").replace("]", "\\]") if i % 2 == 0 else p
                        for i, p in enumerate(parts))
        yield text.replace("`Sentinel.UNSET`", "")


# -- the sandbox ------------------------------------------------------------------------

@functools.cache
def _faults_module() -> types.ModuleType:
    """docs/_gen/faults.py: what each sandbox fault kind does, in words."""
    spec = importlib.util.spec_from_file_location("_docs_faults",
                                                  Path(__file__).with_name("faults.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fault_note(kind: str) -> str | None:
    """What fault ``kind`` does, from docs/_gen/faults.py (None: not described)."""
    faults = _faults_module()
    if kind in faults.FAULT_NOTES:
        return str(faults.FAULT_NOTES[kind])
    match = re.fullmatch(r"resp_code_(\w+)", kind)
    note: str | None = faults.resp_code_note(match[1]) if match else None
    return note


def fault_problems() -> list[str]:
    from sandbox.state import FAULT_KINDS

    return [f"sandbox fault kind {k!r} is not described (docs/_gen/faults.py)"
            for k in FAULT_KINDS if fault_note(k) is None]


def render_fault_kinds() -> str:
    from sandbox.state import FAULT_KINDS

    out = ["| kind | what it does |", "|---|---|"]
    for kind in FAULT_KINDS:
        out.append(f"| `{kind}` | {_cell(fault_note(kind) or '')} |")
    return "\n".join(out) + "\n"


def render_operations() -> str:
    from sandbox.state import OPERATIONS, ROUTES

    return (f"routes: {', '.join(f'`{r}`' for r in ROUTES)}; operations: "
            f"{', '.join(f'`{o}`' for o in OPERATIONS)} (or omitted / `\"*\"`: any)\n")


def control_endpoints() -> list[str]:
    """The ``/_sandbox/...`` paths sandbox/control.py answers (from its source)."""
    source = (ROOT / "sandbox" / "control.py").read_text(encoding="utf-8")
    body = source.split('"""', 2)[2]   # the code after the module docstring
    return sorted(set(re.findall(r'"(/_sandbox/[a-z/_]+)', body)))


def sandbox_doc_problems(page: str) -> list[str]:
    headings = [line for line in page.splitlines() if line.startswith("### ")]
    problems = [f"the sandbox page has no section (### heading) for {path}"
                for path in control_endpoints()
                if not any(path.rstrip("/") in line for line in headings)]
    return problems + fault_problems()


GENERATORS = {
    "api": render_api,
    "settings": render_settings,
    "errors": render_error_tree,
    "states": render_states,
    "cli": render_cli,
    "fault-kinds": render_fault_kinds,
    "fault-operations": render_operations,
}


def all_problems() -> list[str]:
    page = (ROOT / "docs" / "sandbox.md").read_text(encoding="utf-8")
    return (api_problems() + docstring_problems() + settings_problems()
            + sandbox_doc_problems(page))
