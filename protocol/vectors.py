"""Shared test vectors, generated from the construct reference codec.

    python -m serialine.protocol.vectors     # (re)write protocol/vectors.json

Each vector: message name and type, seq, ack, the frame as hex, and its decoded fields as a flat
list in schema order (CONFIG_REPORT's config flattened), exactly what fastcodec.decode returns and
what firmware/wire.py's dec_<name> writes into `out`. Every message type gets edge cases: all
zero, all maximum (strings at full length), signed minimum, values at the 2**30 wrap, and a
typical one (enum fields always hold members: the lowest, highest, middle one). Every enum field
also gets out-of-range vectors (`case` "bad_<field>_<value>": the lowest non-member, 99, 255):
CRC-valid frames both codecs must refuse, with `error` (the one-line detail) and `bad_field`
(flat index); their `fields` are the raw values the decoders read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import schema as S

PATH = Path(__file__).resolve().parent / "vectors.json"


def _int_value(f: S.FieldSpec, case: str, i: int) -> int:
    bits = 8 * f.size
    signed = f.fmt.islower()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if f.enum is not None and case != "typical":
        members = sorted(int(x) for x in f.enum)
        return {"zero": members[0], "min": members[0], "max": members[-1]}.get(
            case, members[len(members) // 2])
    if case == "zero":
        return 0
    if case == "max":
        return hi
    if case == "min":
        return lo if signed else 1
    if case == "wrap":  # either side of the 2**30 wrap, alternating field by field
        if bits == 32:
            return S.WRAP - 1 if i % 2 == 0 else (S.WRAP if not signed else -S.WRAP)
        return hi // 2 + 1
    # typical: a real enum member, or a small distinctive number
    if f.enum is not None:
        members = list(f.enum)
        return int(members[i % len(members)])
    return (1000 + 37 * i) if bits >= 16 else (i + 1) & 0xFF


def _str_value(f: S.FieldSpec, case: str, i: int) -> str:
    width = S.LOG_MAX_TEXT if f.kind == "str_pascal" else f.size
    if case == "zero":
        return ""
    if case in ("max", "wrap"):
        return "".join(chr(33 + (k * 7 + i) % 94) for k in range(width))  # printable, full length
    return f"{f.name[:6]}-{i}"[:width]


def _fields_for(m: S.Message, case: str) -> dict:
    out: dict[str, object] = {}
    i = 0
    for f in S.field_specs(m.payload):
        if f.kind == "struct":
            sub: dict[str, int | str] = {}
            for g in f.fields:
                sub[g.name] = _int_value(g, case, i) if g.kind == "int" else _str_value(g, case, i)
                i += 1
            out[f.name] = sub
        else:
            out[f.name] = _int_value(f, case, i) if f.kind == "int" else _str_value(f, case, i)
            i += 1
    return out


def flatten(m: S.Message, fields: dict) -> list:
    """construct's nested field dict -> flat list in schema order."""
    out: list = []
    for f in S.field_specs(m.payload):
        if f.kind == "struct":
            out.extend(fields[f.name][g.name] for g in f.fields)
        else:
            out.append(fields[f.name])
    return out


CASES = (("zero", 0, 0), ("max", 255, 255), ("min", 1, 254), ("wrap", 128, 127), ("typical", 17, 42))


def generate() -> list[dict]:
    vectors = []
    for m in S.MESSAGES:
        for case, seq, ack in CASES:
            if not m.sequenced:
                seq = 0
            fields = _fields_for(m, case)
            frame = S.build_frame(m.msg_type, seq, ack, fields)
            t, s, a, parsed = S.parse_frame(frame)  # the reference's own decoding is the truth
            vectors.append(dict(name=m.name, msg_type=t, case=case, seq=s, ack=a, hex=frame.hex(),
                                fields=flatten(m, parsed)))
        vectors += _out_of_range(m)
    return vectors


def bad_values(e) -> list[int]:
    """Values outside enumeration e for a u8 field: its lowest non-member, 99 and 255."""
    members = {int(x) for x in e}
    gap = next(v for v in range(256) if v not in members)
    return sorted({gap, 99, 255} - members)


def _out_of_range(m: S.Message) -> list[dict]:
    out = []
    base = _fields_for(m, "typical")
    seq = 17 if m.sequenced else 0
    for f in S.field_specs(m.payload):
        for g in f.fields if f.kind == "struct" else (f,):
            if g.enum is None:
                continue
            for value in bad_values(g.enum):
                fields = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
                (fields[f.name] if f.kind == "struct" else fields)[g.name] = value
                frame = S.build_frame(m.msg_type, seq, 42, fields)
                flat = flatten(m, fields)
                index = [x.name for x in S.flat_fields(m.payload)].index(g.name)
                out.append(dict(name=m.name, msg_type=m.msg_type, case=f"bad_{g.name}_{value}",
                                seq=seq, ack=42, hex=frame.hex(), fields=flat,
                                error=S.out_of_range(m, fields), bad_field=index))
    return out


def dumps(vectors: list[dict]) -> str:
    return "[\n" + ",\n".join(json.dumps(v, sort_keys=True) for v in vectors) + "\n]\n"


def load() -> list[dict]:
    return json.loads(PATH.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = dumps(generate())
    if "--check" in argv:
        if not PATH.exists() or PATH.read_text() != text:
            print(f"{PATH} is out of date: run python -m serialine.protocol.vectors", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
