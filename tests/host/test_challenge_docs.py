"""docs/alarms.md names every alarm the code raises (the device's Alarm enum, the agent's, the
ledger's, the service's and the drivers' kinds, found in the source), and docs/commissioning.md
every pack kind of the challenge."""

from __future__ import annotations

import re
from pathlib import Path

from serialine.host import challenge
from serialine.protocol.schema import Alarm

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = [r'\balarm\(\s*[^,()]+,\s*f?"([A-Z][A-Z_]+)"', r'_alarm_now\(\s*"[^"]*",\s*"([A-Z][A-Z_]+)"',
            r'\.alarm\(\s*"([A-Z][A-Z_]+)"', r'\.append\(\(\s*"[a-z]+",\s*"([A-Z][A-Z_]+)"',
            r'alarm\(\s*"(?:[A-Z_]+)" if [^"]+ else "([A-Z][A-Z_]+)"']


def raised() -> set[str]:
    kinds = {a.name for a in Alarm}
    for p in (ROOT / "host").rglob("*.py"):
        if {"sim", "console"} & set(p.relative_to(ROOT).parts):
            continue  # emulators' own faults; the console only shows alarms
        text = p.read_text()
        for pat in PATTERNS:
            kinds |= set(re.findall(pat, text))
        if 'f"{w.kind.upper()}_LOST"' in text:  # host/service.py
            kinds |= {"CODER_LOST", "CAMERA_LOST", "CODER_BACK", "CAMERA_BACK"}
    return kinds


def test_every_alarm_is_documented():
    doc = (ROOT / "docs" / "alarms.md").read_text()
    named = set(re.findall(r"`([A-Z][A-Z_]+)`", doc))
    kinds = raised()
    assert len(kinds) > 40
    assert kinds - named == set(), f"docs/alarms.md lacks {sorted(kinds - named)}"


def test_commissioning_names_every_pack_kind():
    doc = (ROOT / "docs" / "commissioning.md").read_text()
    for kind in challenge.KINDS:
        assert f"`{kind}`" in doc, kind
    for step in ("## 1. Flash", "## 2. Configure", "## 3. Calibrate", "## 4. Challenge", "## 5. First batch"):
        assert step in doc
