# Device configuration: the schema's ConfigFields, validated as a whole, persisted as a file.
# A config is a list of ints in ConfigFields order (the order wire.dec_config_set fills).
# Field names, indices (C_*) and result codes (CFG_*) are the schema's, generated into wire.py.
from micropython import const
from wire import CONFIG_FIELDS as FIELDS, NFIELDS_CONFIG_SET as NFIELDS
from wire import CFG_OK, CFG_BAD_ORDER, CFG_BAD_RANGE, CFG_BUDGET_TOO_SMALL, CFG_BUSY, CFG_STORAGE
from wire import (C_CAMERA_AT, C_GATE_AT, C_CONFIRM_FROM, C_CONFIRM_TO,
                  C_GATE_LEAD_US, C_DEADLINE_MARGIN, C_MAX_SPEED_CPS, C_MIN_HOST_BUDGET_US)
from wire import DWELL_COUNTS, DWELL_US, POLICY_STOP_ON_LINK_LOSS, POLICY_STOP_ON_DOUBLE_DETECT

# Inclusive ranges, in FIELDS order. Positions stay well below 2**29 so wrapped differences stay
# unambiguous.
_P = const(1 << 24)
RANGES = (
    (0, 0xFFFFFFFF), (1, _P), (1, _P), (1, _P), (1, _P), (1, _P),
    (1, 10000000), (0, 1000000), (1, 10000000), (DWELL_COUNTS, DWELL_US), (0, 100000), (0, _P),
    (0, _P), (1, 10000000), (0, 60000000), (0, 255),
    (10, 600000), (0, 3600000), (0, _P), (0, 10000000), (0, 3600000),
    (0, POLICY_STOP_ON_LINK_LOSS | POLICY_STOP_ON_DOUBLE_DETECT),
)
NO_FIELD = const(255)

PATH = "serialine.cfg"
_MAGIC = b"SLC1"


def budget_us(c):
    """Host decision budget at max speed: camera trigger to the decision deadline, us."""
    v = c[C_MAX_SPEED_CPS]
    lead = c[C_GATE_LEAD_US] * v // 1000000
    counts = c[C_GATE_AT] - lead - c[C_DEADLINE_MARGIN] - c[C_CAMERA_AT]
    return counts * 1000000 // v


def validate(c):
    """(CFG_*, index of the offending field or NO_FIELD) for a whole configuration."""
    if len(c) != NFIELDS:
        return CFG_BAD_RANGE, NO_FIELD
    for i in range(NFIELDS):
        lo, hi = RANGES[i]
        if not lo <= c[i] <= hi:
            return CFG_BAD_RANGE, i
    # PE(0) < coder < camera < gate <= confirm_from < confirm_to
    for i in (C_CAMERA_AT, C_GATE_AT):
        if c[i] <= c[i - 1]:  # C_CODER_AT precedes C_CAMERA_AT precedes C_GATE_AT
            return CFG_BAD_ORDER, i
    if c[C_CONFIRM_FROM] < c[C_GATE_AT]:
        return CFG_BAD_ORDER, C_CONFIRM_FROM
    if c[C_CONFIRM_TO] <= c[C_CONFIRM_FROM]:
        return CFG_BAD_ORDER, C_CONFIRM_TO
    if budget_us(c) < c[C_MIN_HOST_BUDGET_US]:
        return CFG_BUDGET_TOO_SMALL, C_MIN_HOST_BUDGET_US
    return CFG_OK, NO_FIELD


def _crc(data):
    import binascii

    return binascii.crc32(data) & 0xFFFFFFFF


def encode(c):
    body = ",".join(str(v) for v in c).encode()
    return _MAGIC + ("%08x" % _crc(body)).encode() + body


def decode(data):
    """Values from a file's bytes; raises ValueError saying why."""
    if data[:4] != _MAGIC:
        raise ValueError("not a serialine config")
    body = data[12:]
    if int(data[4:12], 16) != _crc(body):
        raise ValueError("checksum mismatch")
    c = [int(x) for x in body.decode().split(",")]
    res, bad = validate(c)
    if res:
        raise ValueError("invalid (result %d field %d)" % (res, bad))
    return c


def save(c, path=PATH):
    """Write temp + rename, so a power cut leaves the old file or the new one."""
    import os

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(encode(c))
    os.rename(tmp, path)


def load(path=PATH):
    """(config or None, why): None with a reason when the file is missing or corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None, "no config file"
    try:
        return decode(data), ""
    except ValueError as e:
        return None, "config file rejected: %s" % e


class Store:
    """Validate, persist, then apply: all or nothing."""

    def __init__(self, core, path=PATH):
        self.core = core
        self.path = path

    def boot(self):
        c, why = load(self.path)
        if c is not None:
            self.core.configure(c)
        return why

    def set(self, c):
        if self.core.busy():
            return CFG_BUSY, NO_FIELD
        res, bad = validate(c)
        if res:
            return res, bad
        try:
            save(c, self.path)
        except OSError:
            return CFG_STORAGE, NO_FIELD
        self.core.configure(list(c))
        return CFG_OK, NO_FIELD
