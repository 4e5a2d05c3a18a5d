"""`serialine verify IMAGE… [--expect CODE] [--json]`: decode and grade DataMatrix images.

Exit 0: every image read as GS1 (and equals --expect when given); 1: an image unreadable, not read,
not GS1 or not the expected code; 2: usage (a bad --expect included)."""

from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np

from .. import gs1
from .grade import LETTERS, NAMES, UNCALIBRATED, grade

UNREADABLE = "unreadable"  # the file is missing or not an image


def load(path: str) -> np.ndarray:
    """Greyscale uint8 array of an image file; OSError/ValueError with one line if it cannot be read."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise OSError("no such file") from None
    except UnidentifiedImageError:
        raise ValueError("not an image file") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the image: {exc}") from None


def expected_ais(code: str) -> dict[str, str]:
    """--expect as an element string (GS separators, `]d2` optional) or in brackets `(01)…(21)…`."""
    text = code.strip()
    if text.startswith("("):
        pairs = re.findall(r"\((\d{2,4})\)([^(]*)", text)
        if "".join(f"({a}){v}" for a, v in pairs) != text:
            raise gs1.GS1Error("brackets do not parse as (AI)value…")
        gs1.validate(pairs)
        return dict(pairs)
    return dict(gs1.parse_read(text if text.startswith("]") else gs1.SYMBOLOGY_DATAMATRIX + text).ais)


def report(path: str, image: np.ndarray, expect: dict | None) -> dict:
    res = grade(image)
    out = {"file": path, **res.to_json()}
    out["detail"] = res.detail
    if expect is not None:
        out["expected"] = gs1.hri(list(expect.items()))
        out["matches_expected"] = bool(res.decoded.ais) and list(res.decoded.ais.items()) == list(expect.items())
    return out


def _table(obj: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    con = Console()
    t = Table(title=obj["file"], title_justify="left")
    t.add_column("parameter")
    t.add_column("value", justify="right")
    t.add_column("grade", justify="center")
    params = obj["parameters"]
    for name in NAMES:
        if name in params:
            p = params[name]
            t.add_row(name.replace("_", " "), "" if p["value"] is None else str(p["value"]), p["grade"])
    t.add_row("[b]overall[/b]", "", f"[b]{obj['overall_grade']}[/b]")
    con.print(t)
    if obj["error"]:
        con.print(f"error: {obj['error']} ({obj['error_detail']})")
    if obj["symbology"]:
        con.print(f"symbology {obj['symbology']}, {obj['version']}, data {obj['data']!r}")
    for ai, value in obj["ais"].items():
        title = gs1.dictionary().get(ai)
        con.print(f"  ({ai}) {value}" + (f"  {title.title}" if title else ""))
    if "matches_expected" in obj:
        con.print(("equals" if obj["matches_expected"] else "[b]differs from[/b]") + f" the expected {obj['expected']}")
    con.print(f"[dim]{UNCALIBRATED}[/dim]")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine verify", description="decode and grade GS1 DataMatrix images "
                                 "after ISO/IEC 15415 (uncalibrated: see docs/verify.md)")
    ap.add_argument("images", nargs="+", metavar="IMAGE")
    ap.add_argument("--expect", metavar="CODE", help="the code the images must carry: its element string "
                    "(GS separators, ]d2 optional) or (01)…(21)… (a value with '(' only as element string)")
    ap.add_argument("--json", action="store_true", help="one JSON object per image per line")
    args = ap.parse_args(argv)
    expect = None
    if args.expect is not None:
        try:
            expect = expected_ais(args.expect)
        except gs1.GS1Error as exc:
            print(f"serialine verify: --expect {args.expect!r}: {exc}", file=sys.stderr)
            return 2
    status = 0
    for path in args.images:
        try:
            image = load(path)
        except (OSError, ValueError) as exc:
            status = 1
            if args.json:
                print(json.dumps({"file": path, "symbology": None, "data": None, "parameters": {},
                                  "overall_grade": LETTERS[0], "error": UNREADABLE, "error_detail": str(exc)}))
            else:
                print(f"serialine verify: {path}: {exc}", file=sys.stderr)
            continue
        obj = report(path, image, expect)
        if obj["error"] or obj.get("matches_expected") is False:
            status = 1
        if args.json:
            print(json.dumps(obj), flush=True)
        else:
            _table(obj)
    return status
