"""MkDocs hooks (mkdocs.yml ``hooks:``): fill ``<!-- generated: NAME -->`` markers from
the code (docs/_gen/reference.py) and warn for everything undocumented, so that
``mkdocs build --strict`` fails on a public name, field or setting without a docstring,
a sandbox fault kind or control endpoint the sandbox page does not describe."""

# Imports are lazy on purpose (the project is imported when a page is built, not when
# the hook loads); asserts narrow importlib's optional results.
# ruff: noqa: S101

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("mkdocs.hooks.reference")
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
_HERE = Path(__file__).resolve().parent


def _reference() -> ModuleType:
    root = str(_HERE.parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location("_docs_reference", _HERE / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_pre_build(config: Any) -> None:
    for problem in _reference().all_problems():
        log.warning(problem)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    reference = _reference()

    def fill(match: re.Match[str]) -> str:
        generator = reference.GENERATORS.get(match[1])
        if generator is None:
            log.warning("%s: no generator for marker %r", page.file.src_path, match[1])
            return match[0]
        return str(generator())

    return MARKER.sub(fill, markdown)
