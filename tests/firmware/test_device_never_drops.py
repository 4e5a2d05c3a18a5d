"""The device never drops an event silently: with no host acking, it fails safe (every open unit
rejected BUFFER_OVERFLOW, alarm, line stop) while its buffer still holds every event the units in
flight can emit — each unit's detection, print, inspection and outcome all reach the buffers."""

CODE = """
import board, device, simline
class Port:
    def readinto(self, b): return 0
    def write(self, b, n): pass
b = board.SimBoard()
d = device.Device(b, Port(), cfg_path='/nonexistent/x', pending=PENDING)
d.core.configure(simline.config()); d.core.start()
last = 10 ** 9  # the infeed stops at the line stop; one pack still coasts in; the belt clears
for t in range(1, 60000):
    if d.core.state == 3 and last == 10 ** 9:
        last = t - 300 + 400
    x = t - 300
    confirm = 1 if x >= 2350 and (x - 2350) % 400 < 20 else 0  # each reject seen falling (mid-window)
    d.scan(t * 100, t, 1 if 0 <= x < min(40000, last) and x % 400 < 150 else 0, confirm, 0, t // 10)
kinds = [0] * 6
for k in range(d.pcount):
    kinds[d.pend[((d.phead + k) % d.npend_cap) * 7]] += 1
print(d.core.detected, d.core.count, d.link.queue_fill, d.pcount, d.lost_events, d.core.state,
      d.core.alarms >> 7 & 1, d.core.rejected, d.event_seq, kinds[4], kinds[5])
"""


def run(mp, pending):
    return list(map(int, mp(CODE.replace("PENDING", pending))[-1].split()))


def test_full_buffers_fail_safe_before_any_event_is_lost(mp):
    detected, in_flight, fill, pending, lost, state, overflow, rejected, seq, outcomes, alarms = run(mp, "120")
    assert lost == 0 and in_flight == 0 and detected < 100  # stopped well before the 100 packs
    assert state == 3 and overflow == 1 and rejected == detected  # stopped, alarmed, nothing passed
    assert fill == 32 == seq  # the link ring: the first 32 events, numbered as queued
    unit_events = fill + pending - alarms
    assert unit_events == 4 * detected  # detected, printed, inspected, outcome: every one of them


def test_the_default_buffer_keeps_the_reserve(mp):
    detected, in_flight, _, _, lost, state, overflow, *_ = run(mp, "None")
    assert lost == 0 and in_flight == 0 and state == 3 and overflow == 1
