"""Every schema value the firmware uses equals the schema's: read from the real MicroPython unix
port (firmware/wire.py, core.py, config.py and boards/sim/simline.py imported there), parsed, and
compared with protocol/schema.py. The firmware copies no schema value by hand."""

from __future__ import annotations

import ast
import re

from serialine.protocol import schema as S
from serialine.tools import gen_wire

DUMP = """
import wire, core, config, simline
for m in (wire, core, config, simline):
    d = {}
    for k in dir(m):
        v = getattr(m, k)
        if k[0] != '_' and k.upper() == k and (type(v) is int or type(v) is tuple):
            d[k] = v
    print(repr((m.__name__, d)))
"""

CONFIG = [f.name for f in S.flat_fields(S.ConfigFields)]
# Firmware-own constants (not schema values): what they are is stated where they are defined.
OWN = {"core": {"NO_UNIT"}, "config": {"NO_FIELD", "RANGES"}, "wire": {"MAX_FIELDS"}, "simline": set()}


def firmware_constants(run_mp) -> dict[str, dict[str, object]]:
    out = run_mp(DUMP)
    return dict(ast.literal_eval(line) for line in out.strip().splitlines())


def schema_value(module: str, name: str):
    """What the schema says `name` in firmware module `module` is; KeyError if it is no schema name."""
    enums = {gen_wire.ENUM_PREFIX[e.__name__]: e for e in S.ENUMS}
    core_prefix = {"R": S.Reason, "A": S.Alarm, "STATE": S.DeviceState, "OUTCOME": S.Outcome}
    if name in ("PASSED", "REJECTED_CONFIRMED", "REJECTED_UNCONFIRMED"):
        return S.Outcome[name]
    if name in ("FIELDS", "CONFIG_FIELDS"):
        return tuple(CONFIG)
    if name == "NFIELDS":
        return len(CONFIG)
    if name.startswith("C_"):
        return CONFIG.index(name[2:].lower())
    if name.startswith("MSG_"):
        return S.BY_NAME[name[4:]].msg_type
    if name.startswith("PAYLOAD_"):
        return gen_wire.max_payload(S.BY_NAME[name[8:]])
    if name.startswith("NFIELDS_"):
        return len(S.flat_fields(S.BY_NAME[name[8:]].payload))
    fixed = {"SOF0": S.SOF[0], "SOF1": S.SOF[1], "FINGERPRINT": S.FINGERPRINT}
    if name in fixed:
        return fixed[name]
    if hasattr(S, name) and isinstance(getattr(S, name), int):
        return getattr(S, name)  # HEADER_SIZE, MAX_FRAME, POLICY_*, STATUS_*, NO_UNIT, ...
    prefix, _, member = name.partition("_")
    for table in ((core_prefix if module != "wire" else {}), enums):
        if prefix in table:
            return table[prefix][member]
    raise KeyError(name)


def test_every_firmware_constant_equals_the_schema(run_mp):
    found = firmware_constants(run_mp)
    checked = 0
    for module, consts in found.items():
        for name, value in consts.items():
            if name in OWN[module]:
                continue
            try:
                want = schema_value(module, name)
            except KeyError:
                raise AssertionError(f"{module}.{name} = {value!r} is neither the schema's nor "
                                     f"listed as the firmware's own") from None
            assert value == want, f"{module}.{name} is {value!r}, the schema says {want!r}"
            checked += 1
    # everything the schema defines is in wire.py, and the firmware uses it
    for e in S.ENUMS:
        for member in e:
            assert found["wire"][f"{gen_wire.ENUM_PREFIX[e.__name__]}_{member.name}"] == member
    assert found["wire"]["CONFIG_FIELDS"] == tuple(CONFIG)
    assert {"R_PURGE", "A_LINK_LOST", "C_GATE_AT", "STATE_RUNNING", "PASSED"} <= set(found["core"])
    assert {"FIELDS", "CFG_BAD_ORDER", "C_MAX_SPEED_CPS"} <= set(found["config"])
    assert found["core"]["NO_UNIT"] == S.WRAP - 1  # the firmware's small-int stand-in for NO_UNIT
    assert checked > 150


def test_no_schema_value_is_copied_by_hand(repo_root):
    # Config fields by index only through the generated C_* names; schema values only as imports.
    for path in ("firmware/core.py", "firmware/config.py", "firmware/device.py", "boards/sim/simline.py"):
        text = (repo_root / path).read_text()
        assert not re.search(r"\b(c|cfg|values)\[\d+\]", text), f"{path}: a raw config index"
        for name, value in re.findall(r"^([A-Z][A-Z0-9_]*) = const\((\w+)\)", text, re.M):
            assert name in OWN["core"] | OWN["config"], f"{path}: {name} = const({value}) copied by hand"
