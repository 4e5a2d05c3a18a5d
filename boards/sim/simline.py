# A small line model that runs inside MicroPython next to the core (virtual time), for the
# firmware tests and `serialine bench firmware`: a belt with packs, an encoder, a photo-eye, a
# reject chute with its confirm sensor, and a host answering each inspected unit after a latency.
from array import array
from micropython import const
import board as simboard
import core
from wire import C_GATE_AT, C_CONFIRM_FROM, C_CONFIRM_TO, C_GATE_LEAD_US

_MASK = const(0x3FFFFFFF)


def config(**kw):
    c = [7, 400, 800, 2000, 2100, 2600, 1000, 5000, 150, 0, 200, 100, 100, 20000, 10000,
         0, 1000, 0, 0, 0, 500, 0]
    import config as cfgmod

    for k, v in kw.items():
        c[cfgmod.FIELDS.index(k)] = v
    return c


class CountingSink:
    """Records into preallocated arrays only (usable with the heap locked)."""

    def __init__(self, n=8192):
        self.n = n
        self.outcome_of = bytearray(n)  # outcome per unit_seq (0 = none yet)
        self.reason_of = bytearray(n)
        self.outcomes = array("i", [0])  # number of outcome events
        self.dups = array("i", [0])
        self.gerr = array("i", bytes(4 * n))
        self.detected_n = 0
        self.printed_n = 0
        self.inspected_n = 0
        self.alarm_bits = 0
        self.inspected_ring = array("i", bytes(4 * 256))  # unit seqs inspected, for the host
        self.insp_t = array("i", bytes(4 * 256))
        self.insp_w = 0

    def detected(self, unit, pos, t, flags):
        self.detected_n += 1

    def printed(self, unit, pos, t):
        self.printed_n += 1

    def inspected(self, unit, pos, t):
        self.inspected_n += 1
        i = self.insp_w & 255
        self.inspected_ring[i] = unit
        self.insp_t[i] = t
        self.insp_w += 1

    def outcome(self, unit, outcome, reason, gate_error, pos, t):
        self.outcomes[0] += 1
        u = unit % self.n
        if self.outcome_of[u]:
            self.dups[0] += 1
        self.outcome_of[u] = outcome
        self.reason_of[u] = reason
        self.gerr[u] = gate_error

    def alarm(self, alarm, active, unit, t):
        if active:
            self.alarm_bits |= 1 << alarm


class VirtualLine:
    """Virtual-time line. speed(t_elapsed_us) -> counts/s; packs every `pitch` counts of travel.
    bad(k) -> host FAIL reason for pack k (0 = good); the host answers after latency_us."""

    def __init__(self, cfg, t0=0, pos0=0, pitch=400, length=150, dt=100, latency_us=3000,
                 capacity=64, npacks=100, bad=None, host=True, first=300):
        self.b = simboard.SimBoard(virtual=True, t0=t0)
        self.sink = CountingSink()
        self.core = core.Core(self.b, self.sink, capacity)
        self.cfg = cfg
        self.dt = dt
        self.latency = latency_us
        self.pitch = pitch
        self.length = length
        self.npacks = npacks
        self.first = first
        self.bad = bad
        self.host = host
        self.travel = 0  # unwrapped encoder travel
        self.pos0 = pos0
        self.acc = 0
        self.elapsed = 0
        self.insp_r = 0
        self.diverted = bytearray(npacks + 1)
        self.confirm_at = array("i", [-1] * (npacks + 1))
        self.core.now = self.b.t
        self.core.pos = pos0 & _MASK
        self.core.configure(cfg)
        self.core.sp_t = self.b.t
        self.core.sp_pos = pos0 & _MASK
        self.core.moved_t = self.b.t
        self.gate_open_t = -1  # when the gate became physically effective (elapsed us)
        self.gate_close_t = -1
        self.speed = None
        self.stop_on = False
        self.chute_ok = True  # False: the confirm sensor never sees a pack
        self.bin_full = 0

    def pe_level(self):
        x = self.travel - self.first
        if x < 0:
            return 0
        k = x // self.pitch
        if k >= self.npacks:
            return 0
        return 1 if x - k * self.pitch < self.length else 0

    def step(self, speed):
        b = self.b
        self.acc += speed * self.dt
        d = self.acc // 1000000
        self.acc -= d * 1000000
        self.travel += d
        self.elapsed += self.dt
        b.t = (b.t + self.dt) & _MASK
        b.pos = (self.pos0 + self.travel) & _MASK
        n0 = b.n
        cfg = self.cfg
        lead = cfg[C_GATE_LEAD_US]
        # the chute: a pack whose leading edge crosses gate_at while the gate is effective
        gate_eff = self.gate_open_t >= 0 and self.elapsed >= self.gate_open_t and (
            self.gate_close_t < 0 or self.elapsed < self.gate_close_t)
        if gate_eff:
            x = self.travel - self.first - cfg[C_GATE_AT]
            if x >= -self.length // 2:
                k = (x + self.length // 2) // self.pitch
                if 0 <= k < self.npacks and x - k * self.pitch <= self.length // 2 \
                        and not self.diverted[k]:
                    self.diverted[k] = 1
                    self.confirm_at[k] = self.first + k * self.pitch + (cfg[C_CONFIRM_FROM] + cfg[C_CONFIRM_TO]) // 2
        conf = 0
        x = self.travel
        k0 = (x - self.first - self.cfg[C_CONFIRM_TO] - 40) // self.pitch
        for k in range(max(0, k0), min(self.npacks, k0 + self.cfg[C_CONFIRM_TO] // self.pitch + 2)):
            ca = self.confirm_at[k]  # confirm sensor: a short pulse as the pack falls by
            if ca >= 0 and ca <= x < ca + 20 and self.chute_ok:
                conf = 1
                break
        self.core.update(b.t, b.pos, self.pe_level(), conf, self.bin_full)
        while n0 < b.n:  # output edges this step: the gate acts `lead` us after its edge
            i = n0 % b.cap
            if b.kind[i] == simboard.OUT_GATE_OPEN:
                self.gate_open_t = self.elapsed + lead
                self.gate_close_t = -1
            elif b.kind[i] == simboard.OUT_GATE_CLOSE:
                self.gate_close_t = self.elapsed + lead
            elif b.kind[i] == simboard.OUT_STOP_ON:
                self.stop_on = True
            n0 += 1
        if self.host:
            s = self.sink
            while self.insp_r < s.insp_w:
                i = self.insp_r & 255
                if b.ticks_diff(b.t, s.insp_t[i]) < self.latency:
                    break
                u = s.inspected_ring[i]
                r = self.bad(u) if self.bad else 0
                self.core.apply_verdict(u, 2 if r else 1, r)
                self.insp_r += 1

    def run(self, us, speed):
        for _ in range(us // self.dt):
            self.step(speed)

    def run_until_done(self, speed, limit_us=60000000):
        t = 0
        while t < limit_us:
            self.step(speed)
            t += self.dt
            if self.sink.outcomes[0] >= self.npacks and not self.core.count:
                return True
        return False


def summary(L):
    """One line the tests parse: what the line and the core did."""
    s = L.sink
    n = L.npacks
    print(repr({
        "detected": s.detected_n, "printed": s.printed_n, "inspected": s.inspected_n,
        "outcomes": s.outcomes[0], "dups": s.dups[0], "alarms": s.alarm_bits,
        "outcome": [s.outcome_of[i] for i in range(n)],
        "reason": [s.reason_of[i] for i in range(n)],
        "gerr": [s.gerr[i] for i in range(n)],
        "diverted": [L.diverted[i] for i in range(n)],
        "stop": L.stop_on, "state": L.core.state, "in_flight": L.core.count,
    }))
