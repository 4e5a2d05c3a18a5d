"""The printable batch record: the same sections as the HTML page (host/release.py batch_record),
then the signatures, as a PDF written by fpdf2 with the DejaVu fonts matplotlib ships (any
language's names print, and the text stays searchable)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import matplotlib
from fpdf import FPDF
from fpdf.fonts import FontFace

from .record import NOT_SECTIONS, label, rows_of, scalar

_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


class _Doc(FPDF):
    title_text = ""

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("DejaVu", size=7)
        self.cell(0, 5, f"{self.title_text} - page {self.page_no()} of {{nb}}", align="C")


def _text(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return scalar(value)


def batch_record(batch_id: str, record: dict, *, generated_by: str) -> bytes:
    doc = _Doc(format="A4")
    doc.title_text = f"Batch record {batch_id}"
    doc.add_font("DejaVu", "", str(_FONTS / "DejaVuSans.ttf"))
    doc.add_font("DejaVu", "B", str(_FONTS / "DejaVuSans-Bold.ttf"))
    doc.set_auto_page_break(True, margin=16)
    doc.alias_nb_pages()
    doc.add_page()
    doc.set_font("DejaVu", "B", 15)
    doc.cell(0, 9, doc.title_text, new_x="LMARGIN", new_y="NEXT")
    doc.set_font("DejaVu", size=8)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    doc.cell(0, 5, f"printed {now} by {generated_by}", new_x="LMARGIN", new_y="NEXT")
    rel = record.get("release") or {}
    doc.set_font("DejaVu", "B", 10)
    doc.cell(0, 6, f"Release: {rel.get('stage', '?')}", new_x="LMARGIN", new_y="NEXT")
    doc.set_font("DejaVu", size=8)
    doc.cell(0, 5, f"record content SHA-256 {record.get('content_sha256', '?')}", new_x="LMARGIN", new_y="NEXT")
    for key, value in record.items():
        if key not in NOT_SECTIONS:
            _section(doc, label(key), value)
    doc.ln(2)
    doc.set_font("DejaVu", "B", 11)
    doc.cell(0, 7, "Signatures", new_x="LMARGIN", new_y="NEXT")
    doc.set_font("DejaVu", size=9)
    for s in record.get("signatures") or []:
        doc.multi_cell(0, 5, f"{s['manifestation']} - content SHA-256 {s['content_sha256']}",
                       new_x="LMARGIN", new_y="NEXT")
    if not record.get("signatures"):
        doc.cell(0, 5, "not signed yet", new_x="LMARGIN", new_y="NEXT")
    return bytes(doc.output())


def _section(doc: _Doc, title: str, value, size: int = 11) -> None:
    doc.ln(2)
    doc.set_font("DejaVu", "B", size)
    doc.cell(0, 7, title[:1].upper() + title[1:], new_x="LMARGIN", new_y="NEXT")
    doc.set_font("DejaVu", size=8)
    rows = rows_of(value)
    if rows is None:  # a scalar, or a mapping: its plain values as lines, its tables below them
        if isinstance(value, dict):
            tables = {k: v for k, v in value.items() if isinstance(v, list) and rows_of(v) is not None}
            for k, v in value.items():
                if k not in tables:
                    doc.multi_cell(0, 4.5, f"{label(k)}: {_text(v)}", new_x="LMARGIN", new_y="NEXT")
            for k, v in tables.items():
                _section(doc, f"{title}: {label(k)}", v, size=9)
        else:
            doc.multi_cell(0, 4.5, _text(value), new_x="LMARGIN", new_y="NEXT")
        return
    head, body = rows
    if not body:
        doc.cell(0, 5, "none", new_x="LMARGIN", new_y="NEXT")
        return
    with doc.table(headings_style=FontFace(emphasis="BOLD"), line_height=4.5, text_align="LEFT") as table:
        r = table.row()
        for h in head:
            r.cell(label(h))
        for line in body:
            r = table.row()
            for cell in line:
                r.cell(_text(cell))
