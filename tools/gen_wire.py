"""Generate `firmware/wire.py`, the MicroPython codec, from the construct schema.

    python -m serialine.tools.gen_wire            # (re)write firmware/wire.py
    python -m serialine.tools.gen_wire --check    # exit 1 if firmware/wire.py is out of date

The generated module is allocation-free on the per-unit path: encoders use `struct.pack_into`
with int args, decoders and the stream deframer are `@micropython.viper` byte arithmetic, and
the CRC-32 is a viper table CRC over (buf, offset, n) that never returns the CRC as a Python int
(a value >= 2**30 would allocate a big int on a 32-bit board).

What is written by hand (CRC, string helpers, the stream deframer) lives in TEMPLATE, a real
MicroPython file; this generator fills its "# @@name@@" lines from the schema. The schema values
the firmware uses (enums, bits, ConfigFields indices and names) are generated here as `const()`
and imported by firmware/core.py and firmware/config.py: no hand-copied schema value.
"""

from __future__ import annotations

import sys
from pathlib import Path

from serialine.host.resources import firmware_dir
from serialine.protocol import schema as S

TARGET = firmware_dir() / "wire.py"
TEMPLATE = Path(__file__).resolve().parent / "templates" / "wire.py"

ENUM_PREFIX = {
    "Outcome": "OUTCOME", "Reason": "REASON", "Verdict": "VERDICT", "Command": "CMD",
    "DeviceState": "STATE", "Alarm": "ALARM", "ConfigResult": "CFG", "HelloStatus": "HELLO",
    "ResetCause": "RESET", "DwellUnit": "DWELL", "LogLevel": "LOG",
}
SCHEMA_BITS = ("POLICY_STOP_ON_LINK_LOSS", "POLICY_STOP_ON_DOUBLE_DETECT", "STATUS_LINK_UP",
               "STATUS_BIN_FULL", "STATUS_PURGING", "UNIT_FLAG_TEST", "NO_UNIT", "LOG_MAX_TEXT")


def payload_layout(msg: S.Message) -> tuple[int, int]:
    """(fixed payload size, offset of the pascal string's length byte or -1).
    A pascal string must be the last field: its length makes the frame variable."""
    flat = S.flat_fields(msg.payload)
    off = 0
    for i, f in enumerate(flat):
        if f.kind == "str_pascal":
            if i != len(flat) - 1:
                raise TypeError(f"{msg.name}.{f.name}: a pascal string must be the last field")
            return off + 1, off
        off += f.size
    return off, -1


def max_payload(msg: S.Message) -> int:
    fixed, var = payload_layout(msg)
    return fixed + (S.LOG_MAX_TEXT if var >= 0 else 0)


FMT = {"B": "B", "H": "H", "h": "h", "L": "I", "I": "I", "l": "i", "i": "i"}


def fmt(f: S.FieldSpec) -> str:
    """struct format char of an int field ("I"/"i" for 32-bit, as MicroPython spells them)."""
    return FMT[f.fmt]


def _ident(name: str) -> str:
    return name.lower()


def _constants(lines: list[str]) -> None:
    c = lambda name, value: lines.append(f"{name} = const({value})")  # noqa: E731
    lines.append("# --- framing ---")
    c("SOF0", f"0x{S.SOF[0]:02X}")
    c("SOF1", f"0x{S.SOF[1]:02X}")
    c("HEADER_SIZE", S.HEADER_SIZE)
    c("CRC_SIZE", S.CRC_SIZE)
    c("MAX_PAYLOAD", S.MAX_PAYLOAD)
    c("MAX_FRAME", S.MAX_FRAME)
    c("PROTOCOL_VERSION", S.PROTOCOL_VERSION)
    c("FINGERPRINT", f"0x{S.FINGERPRINT:08X}")
    lines.append("")
    lines.append("# --- message types, payload sizes (LOG: its maximum) and field counts ---")
    for m in S.MESSAGES:
        c(f"MSG_{m.name}", f"0x{m.msg_type:02X}")
    for m in S.MESSAGES:
        c(f"PAYLOAD_{m.name}", max_payload(m))
    nmax = 0
    for m in S.MESSAGES:
        n = len(S.flat_fields(m.payload))
        nmax = max(nmax, n)
        c(f"NFIELDS_{m.name}", n)
    c("MAX_FIELDS", nmax)
    lines.append("")
    lines.append("# --- enumerations; _ENUM_<NAME>: byte offset of its member set in _ENUM_OK ---")
    for e in S.ENUMS:
        for member in e:
            c(f"{ENUM_PREFIX[e.__name__]}_{member.name}", member.value)
    for k, e in enumerate(S.ENUMS):
        c(f"_ENUM_{ENUM_PREFIX[e.__name__]}", 32 * k)
    lines.append("")
    lines.append("# --- ConfigFields: C_<FIELD> is the field's index in a configuration list ---")
    cfg = S.flat_fields(S.ConfigFields)
    for i, f in enumerate(cfg):
        c(f"C_{f.name.upper()}", i)
    lines.append("CONFIG_FIELDS = (" + ", ".join(repr(f.name) for f in cfg) + ")")
    lines.append("")
    lines.append("# --- bits and limits ---")
    for name in SCHEMA_BITS:
        v = getattr(S, name)
        c(name, f"0x{v:X}" if name != "LOG_MAX_TEXT" else v)
    lines.append("")


def _message_rows(lines: list[str]) -> None:
    rows = []
    for m in S.MESSAGES:
        fixed, var = payload_layout(m)
        rows.append(f"({m.msg_type}, {fixed}, {var + 1}, {int(m.sequenced)})")
    lines.append("_ROWS = (" + ", ".join(rows) + ")")


def _enum_rows(lines: list[str]) -> None:
    rows = [f"(_ENUM_{ENUM_PREFIX[e.__name__]}, ({', '.join(str(int(x)) for x in e)},))"
            for e in S.ENUMS]
    lines.append("_ENUM_ROWS = (" + ", ".join(rows) + ")")


def _enc(lines: list[str], m: S.Message) -> None:
    flat = S.flat_fields(m.payload)
    names = [f.name for f in flat]
    fixed, var = payload_layout(m)
    args = ", ".join(["buf", "seq", "ack", *names])
    lines.append(f"def enc_{_ident(m.name)}({args}):")
    strs = [f for f in flat if f.kind != "int"]
    for f in strs:
        size = S.LOG_MAX_TEXT if f.kind == "str_pascal" else f.size
        lines.append(f"    {f.name} = _check_str({f.name}, {size})")
    length = f"{fixed} + len({strs[-1].name})" if var >= 0 else str(fixed)
    if var >= 0:
        lines.append(f"    n = {length}")
        length = "n"
    # Runs of int fields become one pack_into; strings are copied in between.
    segments: list[tuple[int, list[S.FieldSpec]]] = []
    off = S.HEADER_SIZE
    run: list[S.FieldSpec] = []
    run_off = off
    for f in flat:
        if f.kind == "int":
            if not run:
                run_off = off
            run.append(f)
            off += f.size
            continue
        if run:
            segments.append((run_off, run))
            run = []
        if f.kind == "str_fixed":
            segments.append((off, [f]))
            off += f.size
        else:
            segments.append((off, [f]))
    if run:
        segments.append((run_off, run))
    first = segments[0] if segments and segments[0][0] == S.HEADER_SIZE and segments[0][1][0].kind == "int" else None
    hdr = f"0x{S.SOF[0]:02X}, 0x{S.SOF[1]:02X}, {length}, seq, ack, 0x{m.msg_type:02X}"
    if first:
        sfmt = "<BBBBBB" + "".join(fmt(f) for f in first[1])
        lines.append(f'    struct.pack_into("{sfmt}", buf, 0, {hdr}, {", ".join(f.name for f in first[1])})')
        segments = segments[1:]
    else:
        lines.append(f'    struct.pack_into("<BBBBBB", buf, 0, {hdr})')
    for seg_off, fs in segments:
        f = fs[0]
        if f.kind == "int":
            sfmt = "<" + "".join(fmt(x) for x in fs)
            lines.append(f'    struct.pack_into("{sfmt}", buf, {seg_off}, {", ".join(x.name for x in fs)})')
        elif f.kind == "str_fixed":
            lines.append(f"    _put_str(buf, {seg_off}, {f.name}, {f.size})")
        else:
            lines.append(f"    buf[{seg_off}] = len({f.name})")
            lines.append(f"    _put_str(buf, {seg_off + 1}, {f.name}, len({f.name}))")
    if var >= 0:
        lines.append(f"    _crc_put(buf, 2, 4 + n)")
        lines.append(f"    return {S.HEADER_SIZE + S.CRC_SIZE} + n")
    else:
        lines.append(f"    _crc_put(buf, 2, {4 + fixed})")
        lines.append(f"    return {S.HEADER_SIZE + fixed + S.CRC_SIZE}")
    lines += ["", "", ""]


def _viper_read(f: S.FieldSpec, o: int, i: int) -> list[str]:
    if fmt(f) == "B":
        return [f"    out[{i}] = b[{o}]"]
    if fmt(f) == "H":
        return [f"    out[{i}] = b[{o}] | (b[{o + 1}] << 8)"]
    if fmt(f) == "I":
        return [f"    out[{i}] = uint(b[{o}]) | (uint(b[{o + 1}]) << 8) | (uint(b[{o + 2}]) << 16)"
                f" | (uint(b[{o + 3}]) << 24)"]
    # Signed: sign-extend the top byte, then shift; right on 32- and 64-bit viper ints alike.
    top = o + (1 if fmt(f) == "h" else 3)
    low = f"b[{o}] | (b[{o + 1}] << 8) | (b[{o + 2}] << 16)" if fmt(f) == "i" else f"b[{o}]"
    return [
        f"    hi = int(b[{top}])",
        "    if hi & 0x80:",
        "        hi -= 256",
        f"    out[{i}] = {low} | (hi << {8 * (top - o)})",
    ]


def _enum_checks(flat: tuple[S.FieldSpec, ...], viper: bool) -> list[str]:
    """Return the index of the first enum field outside its enumeration, else -1."""
    out, o = [], S.HEADER_SIZE
    for i, f in enumerate(flat):
        if f.enum is not None:
            assert f.kind == "int" and f.size == 1, f"{f.name}: enum fields are u8"
            off = f"_ENUM_{ENUM_PREFIX[f.enum.__name__]}"
            if viper:
                out += [f"    v = b[{o}]",
                        f"    if (e[{off} + (v >> 3)] >> (v & 7)) & 1 == 0:",
                        f"        return {i}"]
            else:
                out += [f"    if not _enum_ok({off}, out[{i}]):", f"        return {i}"]
        o += f.size if f.kind != "str_pascal" else 0
    return out + ["    return -1"]


def _dec(lines: list[str], m: S.Message) -> None:
    flat = S.flat_fields(m.payload)
    fixed, var = payload_layout(m)
    name = _ident(m.name)
    if all(f.kind == "int" for f in flat):
        lines += [
            "@micropython.viper",
            f"def dec_{name}(buf, out) -> int:",
            "    b = ptr8(buf)",
            f"    if b[5] != 0x{m.msg_type:02X} or b[2] != {fixed}:",
            f"        _bad('{m.name}')",
        ]
        o = S.HEADER_SIZE
        for i, f in enumerate(flat):
            lines += _viper_read(f, o, i)
            o += f.size
        if any(f.enum is not None for f in flat):
            lines.append("    e = ptr8(_ENUM_OK)")
        lines += _enum_checks(flat, True)
        lines += ["", "", ""]
        return
    # Messages with strings (HELLO_REPLY, LOG): not on the per-unit path; may allocate.
    lines += [f"def dec_{name}(buf, out):"]
    if var >= 0:
        lines += [
            f"    if buf[5] != 0x{m.msg_type:02X} or buf[2] < {fixed} or buf[2] > {fixed + S.LOG_MAX_TEXT}"
            f" or buf[{S.HEADER_SIZE + var}] != buf[2] - {fixed}:",
            f"        _bad('{m.name}')",
        ]
    else:
        lines += [f"    if buf[5] != 0x{m.msg_type:02X} or buf[2] != {fixed}:", f"        _bad('{m.name}')"]
    o = S.HEADER_SIZE
    for i, f in enumerate(flat):
        if f.kind == "int":
            lines.append(f'    out[{i}] = struct.unpack_from("<{fmt(f)}", buf, {o})[0]')
            o += f.size
        elif f.kind == "str_fixed":
            lines.append(f"    out[{i}] = _get_str(buf, {o}, {f.size}, True)")
            o += f.size
        else:
            lines.append(f"    out[{i}] = _get_str(buf, {o + 1}, buf[{o}], False)")
    lines += _enum_checks(flat, False)
    lines += ["", "", ""]


def _encoders(lines: list[str]) -> None:
    for m in S.MESSAGES:
        _enc(lines, m)


def _decoders(lines: list[str]) -> None:
    for m in S.MESSAGES:
        _dec(lines, m)


def generate() -> str:
    sections = {"constants": _constants, "message_rows": _message_rows, "enum_rows": _enum_rows,
                "encoders": _encoders, "decoders": _decoders}
    template = TEMPLATE.read_text().splitlines()
    first = next(i for i, line in enumerate(template) if line.startswith('"""'))
    out: list[str] = []
    for line in template[first:]:  # the template's own leading comment is not in the output
        if line.startswith("# @@") and line.endswith("@@"):
            lines: list[str] = []
            sections.pop(line[4:-2])(lines)
            out.append("\n".join(lines).rstrip())
        else:
            out.append(line)
    assert not sections, f"{TEMPLATE} lacks the lines for {', '.join(sections)}"
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = generate()
    if "--check" in argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python -m serialine.tools.gen_wire", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
