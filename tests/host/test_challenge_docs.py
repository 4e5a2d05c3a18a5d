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


# --- docs/wiring.md: the pin tables are the board files' pin maps -----------------------------------

BOARDS = {"rpi_pico": "Raspberry Pi Pico (RP2040)", "esp32": "ESP32"}
# PIN_ name -> (what is wired there, the line file / firmware name it is)
ROLES = {
    "UART_TX": ("link to the host: UART TX → the host adapter's RX", "[device] port"),
    "UART_RX": ("link to the host: UART RX ← the host adapter's TX", "[device] port"),
    "ENC_A": ("conveyor encoder, phase A (counted in hardware)", "[line] counts_per_mm"),
    "ENC_B": ("conveyor encoder, phase B", "[line] counts_per_mm"),
    "PE": ("product photo-eye (a pack in front of it = active)", "photo-eye, position 0"),
    "CONFIRM": ("reject-confirm sensor in the chute/bin", "[line] confirm_window_mm"),
    "BIN_FULL": ("reject bin full sensor", "BIN_FULL alarm"),
    "CODER": ("coder print trigger (a pulse per pack)", "[line] coder_at_mm"),
    "CAMERA": ("camera trigger (a pulse per pack)", "[line] camera_at_mm"),
    "GATE": ("reject gate actuator (held open for the dwell)", "[line] gate_at_mm, gate_lead_ms, gate_dwell_mm"),
    "STOP": ("line stop to the PLC (active = stop)", "line stop"),
}


def _direction(src: str, name: str) -> str:
    pin = f"PIN_{name}"
    if len(re.findall(rf"\b{pin}\b", src)) == 1:
        return "not read by the firmware (may stay unwired)"
    if re.search(rf"in_base=machine\.Pin\({pin}\)|Encoder\([^\n]*Pin\({pin}\)", src):
        return "input, hardware counter"
    if re.search(rf"Pin\({pin}, machine\.Pin\.IN, machine\.Pin\.PULL_UP\)", src):
        return "input, internal pull-up"
    if re.search(rf"Pin\({pin}, machine\.Pin\.OUT", src):
        return "output, low at boot"
    if re.search(rf"(StateMachine|RMT)\([^)]*Pin\({pin}\)", src):
        return "output, hardware pulse"
    if "UART" in name:
        return "UART, 115200 baud"
    return "?"


def wiring_table(board: str) -> str:
    """The markdown table of boards/<board>/board.py's pin map."""
    src = (ROOT / "boards" / board / "board.py").read_text()
    pins = re.findall(r"^PIN_(\w+) = const\((\d+)\)", src, re.M)
    pulse = re.search(r"^PULSE_US = const\((\d+)\)", src, re.M)
    rows = ["| signal | GPIO | direction | what is wired there | used by |", "|---|---|---|---|---|"]
    for name, gpio in pins:
        what, used = ROLES[name]  # a new pin in a board file needs its row here and in docs/wiring.md
        if name in ("CODER", "CAMERA") and pulse:
            what += f", {pulse.group(1)} µs high"
        rows.append(f"| `{name.lower()}` | GP{gpio} | {_direction(src, name)} | {what} | {used} |"
                    if board == "rpi_pico" else
                    f"| `{name.lower()}` | GPIO{gpio} | {_direction(src, name)} | {what} | {used} |")
    return "\n".join(rows)


def test_wiring_doc_is_the_board_files_pin_maps():
    doc = (ROOT / "docs" / "wiring.md").read_text()
    for board in BOARDS:
        got = re.search(rf"<!-- pins:{board} -->\n(.*?)\n<!-- /pins -->", doc, re.S)
        assert got, f"docs/wiring.md has no <!-- pins:{board} --> table"
        want = wiring_table(board)
        assert got.group(1) == want, f"docs/wiring.md's {board} table differs from boards/{board}/board.py:\n{want}"
    for name in ROLES:  # every signal the firmware wires is in every board's table
        assert doc.count(f"| `{name.lower()}` |") == len(BOARDS), name
    assert "wiring.md" in (ROOT / "docs" / "commissioning.md").read_text()


if __name__ == "__main__":  # python tests/host/test_challenge_docs.py: the tables to paste
    for b in BOARDS:
        print(f"<!-- pins:{b} -->\n{wiring_table(b)}\n<!-- /pins -->\n")
