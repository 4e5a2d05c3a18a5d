"""The project's foundation: the schema's own invariants, the CLI, the bootstrap."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from construct import Int16ul, Int32ul, Struct

from serialine.host import cli
from serialine.protocol import schema


def test_message_ids_and_names_are_unique():
    assert len({m.msg_type for m in schema.MESSAGES}) == len(schema.MESSAGES)
    assert len({m.name for m in schema.MESSAGES}) == len(schema.MESSAGES)


def test_every_payload_fits_the_frame_limit():
    for m in schema.MESSAGES:
        size = sum(f.size for f in schema.flat_fields(m.payload))
        assert size <= schema.MAX_PAYLOAD, m.name


def test_fingerprint_changes_with_any_byte_level_change():
    base = schema.fingerprint()
    assert base == schema.FINGERPRINT
    verdict = schema.BY_NAME["VERDICT"]
    # a field's type
    widened = dataclasses.replace(verdict, payload=Struct("unit_seq" / Int16ul, *verdict.payload.subcons[1:]))
    # a field's name
    renamed = dataclasses.replace(verdict, payload=Struct("unit" / Int32ul, *verdict.payload.subcons[1:]))
    # sequencing
    unsequenced = dataclasses.replace(verdict, sequenced=False)
    for changed in (widened, renamed, unsequenced):
        msgs = [changed if m is verdict else m for m in schema.MESSAGES]
        assert schema.fingerprint(msgs) != base
    # documentation is not part of the bytes, so it does not change the fingerprint
    redoc = dataclasses.replace(verdict, doc="other words")
    assert schema.fingerprint([redoc if m is verdict else m for m in schema.MESSAGES]) == base


def test_reference_codec_round_trips_and_refuses_corruption():
    fields = dict(event_seq=7, unit_seq=(1 << 30) - 1, outcome=schema.Outcome.REJECTED_CONFIRMED,
                  reason=schema.Reason.NO_VERDICT, gate_error=-32768, pos=0, t_us=(1 << 30) - 1)
    frame = schema.build_frame(0x23, 3, 250, fields)
    assert len(frame) == schema.HEADER_SIZE + 20 + schema.CRC_SIZE
    assert schema.parse_frame(frame) == (0x23, 3, 250, {k: int(v) for k, v in fields.items()})
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x10
        with pytest.raises(Exception):
            schema.parse_frame(bytes(bad))


def test_reference_codec_refuses_oversized_and_unknown():
    with pytest.raises(ValueError, match="unknown msg_type"):
        body = bytes([0, 0, 0, 0x7F])
        schema.parse_frame(schema.SOF + body + schema.crc32(body).to_bytes(4, "little"))
    with pytest.raises(Exception):
        schema.build_frame(0x32, 0, 0, dict(event_seq=1, level=20, text="x" * (schema.LOG_MAX_TEXT + 1)))


def test_cli_lists_commands_and_refuses_unknown(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "serialine.host.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "serialine COMMAND" in proc.stdout


def test_shipped_standards_match_their_manifest():
    """The standards ship in the package (host/standards) with SHA256SUMS taken when they were copied
    unchanged from their publishers: every file is listed, every listed file is there, unchanged.
    Nothing outside the repository is consulted."""
    import hashlib

    from serialine.host import standards

    listed = {}
    for line in (standards.HERE / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(None, 1)
        listed[name.strip()] = digest
    present = {p.relative_to(standards.HERE).as_posix() for p in standards.HERE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name not in ("__init__.py", "SHA256SUMS")}
    assert present == set(listed), (present ^ set(listed))
    for name, digest in listed.items():
        assert hashlib.sha256((standards.HERE / name).read_bytes()).hexdigest() == digest, name
    for path in (standards.GS1_SYNTAX_DICTIONARY, standards.EPCIS_JSON_SCHEMA, standards.EPCIS_XSD_12,
                 standards.EPCIS_XSD_20, standards.CAPTURE_OPENAPI, standards.EPCIS_CONTEXT):
        assert path.is_file() and path.relative_to(standards.HERE), path


def test_code_reads_standards_from_the_package_only(repo_root):
    """No machine path (/work/shared, ../shared) in the code: the package is self-contained."""
    from serialine.host import gs1, standards

    for py in (repo_root / "host").rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        assert "/work/shared" not in text and "../shared" not in text, py
    gs1.dictionary.cache_clear()
    assert gs1.dictionary()["01"].title == "GTIN"
    assert standards.GS1_SYNTAX_DICTIONARY.is_relative_to(standards.HERE)
