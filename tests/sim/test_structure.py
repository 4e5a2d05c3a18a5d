"""The simulator is one place: no import circle inside it, no class named like another class of
the shipped code, one launcher for the MicroPython unix port."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "host" / "sim"
SHIPPED = ("host", "protocol", "firmware", "boards", "tools")


def _imports(path: Path) -> set[str]:
    """The host/sim modules a file imports (relative `from .x import` and `from . import x`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def test_no_import_circle_in_the_simulator():
    graph = {p.stem: _imports(p) for p in SIM.glob("*.py")}

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert circles == []
    assert "run" not in graph["parts"]


def _classes(path: Path) -> list[str]:
    return [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]


def test_no_simulator_class_is_named_like_another_class():
    elsewhere: dict[str, Path] = {}
    for top in SHIPPED:
        for p in (ROOT / top).rglob("*.py"):
            if SIM not in p.parents and "templates" not in p.parts:
                for name in _classes(p):
                    elsewhere.setdefault(name, p)
    clashes = {name: str(elsewhere[name].relative_to(ROOT)) for p in SIM.glob("*.py")
               for name in _classes(p) if name in elsewhere}
    assert clashes == {}
    mine = [name for p in SIM.glob("*.py") for name in _classes(p)]
    assert sorted({n for n in mine if mine.count(n) > 1}) == []


def test_one_place_launches_the_micropython_unix_port():
    users = sorted(str(p.relative_to(ROOT)) for top in (*SHIPPED, "tests") for p in (ROOT / top).rglob("*.py")
                   if '"MICROPYPATH":' in p.read_text() and p.name != "test_structure.py")  # an env built
    assert users == ["host/sim/unixport.py"]
