"""``render(receipt, fmt) -> bytes``: the JSON receipt (canonical, signed), an HTML page
printable on one A4 sheet (inline CSS, no external resources) and a PDF (fpdf2).

The PDF embeds a CJK font from a Debian package the project installs itself
(``fonts-noto-cjk``, see scripts/install-system-deps.sh); nothing is downloaded at run
time. fpdf2 reads the TrueType collection (.ttc) directly: we pick the Simplified Chinese
face by name. A missing font is a ``ConfigurationError`` saying which package to install.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal

import jinja2

from gateway.errors import ConfigurationError, InvalidRequest
from reconciliation.receipts.build import display_time
from reconciliation.receipts.canonical import canonical_json
from reconciliation.receipts.layout import (
    digest_groups,
    history_rows,
    main_rows,
    verify_hint,
    version_rows,
)
from reconciliation.receipts.model import Receipt

Format = Literal["json", "html", "pdf"]
FORMATS: Final[tuple[Format, ...]] = ("json", "html", "pdf")

# (regular, bold, mono) candidates: file, face name inside a collection (None: a plain font).
_FONT_DIRS: Final = (Path("/usr/share/fonts/opentype/noto"),
                     Path("/usr/share/fonts/truetype/wqy"),
                     Path("/usr/share/fonts/truetype/arphic"))
_CANDIDATES: Final = (
    ("NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc", "Noto Sans CJK SC",
     "Noto Sans Mono CJK SC"),
    ("wqy-microhei.ttc", None, "WenQuanYi Micro Hei", "WenQuanYi Micro Hei Mono"),
    ("uming.ttc", None, "AR PL UMing CN", None),
)
FONT_PACKAGE: Final = "fonts-noto-cjk"


def render(receipt: Receipt, fmt: str) -> bytes:
    """The receipt as ``json``, ``html`` or ``pdf`` bytes; the digest is on every one."""
    if fmt == "json":
        return render_json(receipt)
    if fmt == "html":
        return render_html(receipt).encode("utf-8")
    if fmt == "pdf":
        return render_pdf(receipt)
    raise InvalidRequest(f"unknown receipt format {fmt!r}; choose from {', '.join(FORMATS)}",
                         field="format")


def render_json(receipt: Receipt) -> bytes:
    """Exactly the canonical form that ``verify`` checks (one line, no trailing newline)."""
    return canonical_json(receipt.to_dict())


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)


def render_html(receipt: Receipt) -> str:
    sig = receipt.signature
    return _templates().get_template("receipt.html.j2").render(
        r=receipt, rows=main_rows(receipt), history=history_rows(receipt),
        versions=version_rows(receipt), digest=digest_groups(receipt.digest),
        key_id=sig.key_id if sig else "—", signature=sig.value if sig else "UNSIGNED",
        hint=verify_hint(receipt), issued=display_time(receipt.issued_at))


# -- PDF --------------------------------------------------------------------------------
class CJKFont:
    """A located CJK font: file and collection index for each of regular / bold / mono."""

    def __init__(self, regular: tuple[Path, int], bold: tuple[Path, int],
                 mono: tuple[Path, int]) -> None:
        self.regular, self.bold, self.mono = regular, bold, mono


def _face_index(path: Path, face: str | None) -> int | None:
    """Index of ``face`` inside a .ttc (0 for a plain font); None when it is not there."""
    if path.suffix.lower() != ".ttc" or face is None:
        return 0
    # fontTools ships with fpdf2 but has no type information.
    from fontTools.ttLib import TTCollection  # type: ignore[import-untyped]  # noqa: PLC0415

    collection = TTCollection(str(path), lazy=True)
    try:
        for i, font in enumerate(collection.fonts):
            if font["name"].getDebugName(4) == face:
                return i
    finally:
        collection.close()
    return None


@lru_cache(maxsize=1)
def find_cjk_font() -> CJKFont:
    """The first installed candidate; ``ConfigurationError`` when none is."""
    for regular, bold, face, mono_face in _CANDIDATES:
        for folder in _FONT_DIRS:
            path = folder / regular
            if not path.is_file():
                continue
            index = _face_index(path, face)
            if index is None:
                continue
            bold_path = folder / bold if bold and (folder / bold).is_file() else path
            bold_index = _face_index(bold_path, face)
            mono_index = _face_index(path, mono_face) if mono_face else None
            return CJKFont((path, index), (bold_path, bold_index or 0),
                           (path, mono_index if mono_index is not None else index))
    raise ConfigurationError(
        f"no CJK font for PDF receipts: install the Debian package {FONT_PACKAGE} "
        f"(scripts/install-system-deps.sh), which provides "
        f"{_FONT_DIRS[0] / _CANDIDATES[0][0]}", setting="fonts")


def render_pdf(receipt: Receipt) -> bytes:
    from fpdf import FPDF  # noqa: PLC0415 - fpdf2 only when a PDF is asked for
    from fpdf.enums import WrapMode  # noqa: PLC0415
    from fpdf.fonts import FontFace  # noqa: PLC0415

    font = find_cjk_font()
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(12, 12, 12)
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title(f"转账回执 Transfer receipt {receipt.refund_id}")
    pdf.set_author(receipt.platform)
    pdf.set_creator("refund-gateway receipts")
    pdf.set_creation_date(datetime.fromisoformat(receipt.issued_at))
    pdf.add_font("cjk", "", font.regular[0], collection_font_number=font.regular[1])
    pdf.add_font("cjk", "B", font.bold[0], collection_font_number=font.bold[1])
    pdf.add_font("cjkmono", "", font.mono[0], collection_font_number=font.mono[1])
    pdf.add_page()
    width = pdf.epw

    pdf.set_font("cjk", "B", 15)
    pdf.cell(width * 0.55, 8, "转账回执 Transfer receipt")
    pdf.set_font("cjk", "", 8)
    pdf.multi_cell(width * 0.45, 4, f"开具时间 Issued {display_time(receipt.issued_at)}"
                                    f"（北京时间 UTC+8）\n{receipt.schema}", align="R",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", "", 9)
    pdf.cell(0, 5, receipt.platform, new_x="LMARGIN", new_y="NEXT")
    pdf.set_line_width(0.6)
    pdf.line(pdf.l_margin, pdf.get_y() + 1, pdf.l_margin + width, pdf.get_y() + 1)
    pdf.ln(3)

    pdf.set_font("cjk", "", 8.5)
    with pdf.table(col_widths=(36, 64), first_row_as_headings=False, borders_layout="NONE",
                   line_height=4.6, cell_fill_color=(243, 243, 243), text_align="LEFT",
                   cell_fill_mode="ROWS", padding=(0.4, 1.5)) as table:
        for row in main_rows(receipt):
            cells = table.row()
            cells.cell(row.label)
            cells.cell(row.value, style=FontFace(family="cjkmono") if row.mono else None)

    def heading(text: str) -> None:
        pdf.ln(2)
        pdf.set_font("cjk", "B", 10.5)
        pdf.cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_line_width(0.2)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
        pdf.ln(1)

    heading("下一步 What you can do next")
    pdf.set_font("cjk", "", 9)
    # Chinese wraps between any two characters (there are no spaces to break at).
    pdf.multi_cell(0, 4.8, receipt.guidance.zh, align="L", wrapmode=WrapMode.CHAR,
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    pdf.multi_cell(0, 4.4, receipt.guidance.en, align="L", new_x="LMARGIN", new_y="NEXT")

    heading("处理记录 History")
    pdf.set_font("cjk", "", 8)
    with pdf.table(col_widths=(30, 40, 30), line_height=4, borders_layout="HORIZONTAL_LINES",
                   headings_style=FontFace(emphasis="BOLD"), padding=(0.3, 1.2)) as table:
        table.row(["时间 Time", "事件 Event", "状态 Status"])
        for when, kind, change in history_rows(receipt):
            table.row([when, kind, change])

    pdf.ln(3)
    sig = receipt.signature
    pdf.set_font("cjk", "", 8)
    with pdf.table(col_widths=(36, 64), first_row_as_headings=False, borders_layout="NONE",
                   line_height=4.2, padding=(0.3, 1.5), text_align="LEFT") as table:
        for row in version_rows(receipt):
            table.row([row.label, row.value])
    pdf.ln(1)
    pdf.set_font("cjk", "", 8.5)
    top = pdf.get_y()
    pdf.multi_cell(0, 4.5, "防篡改校验码 Tamper-evidence digest (SHA-256)，"
                           f"Ed25519 签名 signature, 密钥 key {sig.key_id if sig else '—'}：",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjkmono", "", 10)
    pdf.multi_cell(0, 5, digest_groups(receipt.digest), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjkmono", "", 6.5)
    pdf.multi_cell(0, 3.2, sig.value if sig else "UNSIGNED", new_x="LMARGIN", new_y="NEXT",
                   wrapmode=WrapMode.CHAR)
    pdf.set_font("cjk", "", 7.5)
    pdf.multi_cell(0, 4, verify_hint(receipt), new_x="LMARGIN", new_y="NEXT",
                   wrapmode=WrapMode.CHAR)
    pdf.rect(pdf.l_margin, top - 1, width, pdf.get_y() - top + 2)
    pdf.ln(2)
    pdf.set_font("cjk", "", 7)
    pdf.multi_cell(0, 3.5, "账户号码仅显示末四位 Account numbers show the last 4 digits only. "
                           "本回执由系统生成，每一版均留存且不可更改 Generated by the platform; "
                           "every version is kept unchanged. The JSON form of this receipt "
                           "carries the same digest and signature.",
                   new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
