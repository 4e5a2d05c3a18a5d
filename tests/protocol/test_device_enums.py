"""The firmware refuses host messages with an enum value out of range (real MicroPython unix
port, firmware/device.py's handler): a VERDICT fails safe (its unit is rejected, reason
VERDICT_FAIL), a CONFIG_SET is refused with BAD_RANGE naming the field, a COMMAND is ignored."""

from __future__ import annotations

from serialine.protocol import schema as S

CODE = """
import board, device, simline, wire
class Port:  # the host's HELLO, then silence; takes every frame the device writes
    def __init__(self):
        self.rx = bytearray(wire.MAX_FRAME)
        self.n = wire.enc_hello(self.rx, 0, 0, wire.FINGERPRINT, wire.PROTOCOL_VERSION)
    def readinto(self, b):
        n, self.n = self.n, 0
        b[:n] = self.rx[:n]
        return n
    def write(self, b, n): pass
b = board.SimBoard()
d = device.Device(b, Port(), cfg_path='/nonexistent/x')
d.core.configure(simline.config()); d.core.start()
t = 0
while d.core.count < 5:  # five packs past the photo-eye, none decided yet
    t += 1
    x = t - 300
    d.scan(t * 100, t, 1 if 0 <= x < 8000 and x % 400 < 150 else 0, 0, 0, t // 10)
c = d.core
buf = bytearray(wire.MAX_FRAME)
def verdict(unit, v, r):
    wire.enc_verdict(buf, 0, 0, unit, v, r)
    d.handle(wire.MSG_VERDICT, buf)
    i = [j for j in range(c.cap) if c.useq[j] == unit][0]
    return c.verdict[i], c.reason[i]
print(verdict(0, wire.VERDICT_PASS, 99), verdict(1, 7, wire.REASON_OK), verdict(2, 0, 0),
      verdict(3, wire.VERDICT_FAIL, wire.REASON_CODE_MISMATCH), verdict(4, wire.VERDICT_PASS, 0))
cfg = simline.config(config_id=99, dwell_unit=5)
wire.enc_config_set(buf, 0, 0, *cfg)
before = list(c.cfg)
d.handle(wire.MSG_CONFIG_SET, buf)
lk = d.link
slot = lk.slots[(lk.head + lk.count - 1) % lk.nslots]
out = [0] * wire.MAX_FIELDS
wire.dec_config_report(slot, out)
print(out[1], out[2], c.cfg == before)
state = c.state
wire.enc_command(buf, 0, 0, 99, 0)
d.handle(wire.MSG_COMMAND, buf)
wire.enc_command(buf, 0, 0, 0, 0)
d.handle(wire.MSG_COMMAND, buf)
print(c.state == state)
"""


def test_device_refuses_out_of_range_enums_fail_safe(run_mp):
    lines = run_mp(CODE).strip().splitlines()
    fail, verdict_fail = int(S.Verdict.FAIL), int(S.Reason.VERDICT_FAIL)
    assert lines[-3] == " ".join(str(x) for x in (
        (fail, verdict_fail), (fail, verdict_fail), (fail, verdict_fail),  # reason 99, verdict 7, 0
        (fail, int(S.Reason.CODE_MISMATCH)), (int(S.Verdict.PASS), 0)))   # controls
    dwell_unit = [f.name for f in S.flat_fields(S.ConfigFields)].index("dwell_unit")
    assert lines[-2] == f"{int(S.ConfigResult.BAD_RANGE)} {dwell_unit} True"
    assert lines[-1] == "True"
