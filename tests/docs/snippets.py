"""The code blocks of README.md and docs/*.md, as the snippet tests run them.

Every fenced block has a language. ``python`` blocks are executed; ``bash`` blocks are
checked command by command (``refund-gateway`` lines parsed by the real click commands,
``make`` targets, extras, settings names and paths looked up) and, when marked ``run``,
executed against the sandbox. ``text`` and ``json`` blocks are output, not code.

A block is configured by an HTML comment on the line before its fence (invisible on the
rendered page, visible in the source)::

    <!-- snippet: setup=sandbox-env check=flask-notify -->
    <!-- snippet: pytest -->                 (the block is a test file: run by pytest)
    <!-- snippet: run -->                    (bash: execute the commands too)
    <!-- snippet: skip reason="why" -->      (not run; the reason shows in the report)

The setups and checks are the fixtures of tests/docs/test_snippets.py.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
MARK = re.compile(r"^\s*<!--\s*snippet:(?P<options>.*?)-->\s*$")
OPTION = re.compile(r'(?P<key>[\w-]+)(?:=(?:"(?P<quoted>[^"]*)"|(?P<value>\S+)))?')
OUTPUT_LANGUAGES = frozenset({"text", "json", "mermaid"})
KNOWN_OPTIONS = frozenset({"setup", "check", "pytest", "run", "skip", "reason"})


@dataclass(frozen=True)
class Snippet:
    """One fenced block: where it is, its language, its code and its options."""

    path: Path
    line: int                     # 1-based line of the opening fence
    lang: str
    code: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def setups(self) -> list[str]:
        return self.options.get("setup", "").split(",") if "setup" in self.options else []


def sources() -> list[Path]:
    """README.md and every page of docs/ (docs/index.md only includes the README)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def parse_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for match in OPTION.finditer(text):
        value = match["quoted"] if match["quoted"] is not None else match["value"]
        options[match["key"]] = value if value is not None else ""
    return options


def extract(path: Path) -> list[Snippet]:
    """The fenced blocks of one Markdown file, with the options of the comment above."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = len(opening["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{{indent}}}```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        mark = MARK.match(lines[j]) if j >= 0 else None
        options = parse_options(mark["options"]) if mark else {}
        out.append(Snippet(path, start + 1, opening["lang"], "\n".join(body) + "\n",
                           options))
        i += 1
    return out


def all_snippets() -> list[Snippet]:
    return [s for path in sources() for s in extract(path)]


def commands(code: str) -> list[list[str]]:
    """The commands of a bash block as argument lists: comments dropped, ``\\``
    continuations joined."""
    joined = code.replace("\\\n", " ")
    out = [shlex.split(line, comments=True) for line in joined.splitlines()]
    return [argv for argv in out if argv]


def reference() -> ModuleType:
    """docs/_gen/reference.py (the site's generators and completeness checks)."""
    spec = importlib.util.spec_from_file_location("_docs_reference",
                                                  ROOT / "docs" / "_gen" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
