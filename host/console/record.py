"""How the batch record's sections (host/release.py batch_record: a dict of sections) are laid out,
the same for the HTML page and the PDF: a list of mappings or a mapping of mappings is a table,
a mapping of plain values is a list of "name: value", anything else one line."""

from __future__ import annotations

# shown on their own at the top (release, content hash) and bottom (signatures), or not a section at all
NOT_SECTIONS = ("kind", "id", "signatures", "content_sha256", "release")

def label(key) -> str:
    return str(key).replace("_", " ")


def scalar(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rows_of(value) -> tuple[list[str], list[list]] | None:
    """(column names, rows) when `value` is table-shaped, else None."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        head: list[str] = []
        for v in value:
            head += [k for k in v if k not in head]
        return head, [[v.get(h) for h in head] for v in value]
    if isinstance(value, list) and not value:
        return [], []
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        head = ["name"]
        for v in value.values():
            head += [k for k in v if k not in head]
        return head, [[k, *[v.get(h) for h in head[1:]]] for k, v in value.items()]
    return None

