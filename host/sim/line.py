"""The physical line: conveyor, packs, encoder, photo-eye, gate actuator, confirm sensor, reject bin.

Everything is in encoder counts and µs of the simulator's clock. A pack's *offset* is how far its
leading edge has travelled past the photo-eye (the firmware's unit position is taken at that edge, so
offsets compare directly with coder_at / camera_at / gate_at). The model knows the truth the reports
compare with the ledger: which packs it made bad and which it physically pushed into the bin.

The model is driven from outside: `advance(t_us)` moves the belt and returns the input edges
(photo-eye, confirm sensor, bin-full) that happened on the way; `output(name, level, t_us)` applies
the device's output edges (coder and camera triggers, gate). A pack is rejected only if the gate
paddle is physically out (lead time after the output edge) while the pack is in front of it."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .scenario import Scenario

SUBSTEP_US = 200  # belt integration step; edges inside a step are interpolated
CONFIRM_PULSE_US = 2_000


@dataclass
class Pack:
    index: int  # order on the belt, from 0
    belt_at: float  # belt position at which its leading edge reaches the photo-eye
    length: float
    detected_t: int | None = None
    code: str | None = None  # what the coder was asked to print on it
    printed: str | None = None  # what is physically on it
    prints: int = 0
    smeared: bool = False
    defect: str = ""  # misprint | skip | smear | empty | double_print | unprinted
    camera_fault: str = ""  # no_read | misread | low_grade | missed_trigger (the camera's, the pack is fine)
    camera_missed: bool = False  # the camera missed its trigger (whatever the pack): later results slip
    read: str | None = None  # what the camera reported
    camera_n: int = 0  # the camera's trigger number for it
    unit_key: tuple[int, int] | None = None  # (boot number, unit_seq) the device gave it
    rejected: bool = False
    rejected_offset: float | None = None  # offset when the paddle first touched it
    in_bin: bool = False

    @property
    def bad(self) -> bool:
        """Bad: no code, the wrong code, more than one code, or an unreadable one."""
        return bool(self.defect)


@dataclass
class Edge:
    t_us: int
    name: str  # photo_eye | confirm | bin_full
    level: int


@dataclass
class GateEvent:
    t_us: int  # when the paddle was physically out
    error: float  # offset of the nearest pack minus gate_at, counts
    pack: int | None


@dataclass
class Profile:
    """Line speed (counts/s) as a function of virtual time."""

    kind: str
    full_cps: float
    unit_us: float  # time one pitch takes at full speed
    ramp_from: float = 1.0
    ramp_to: float = 1.0
    ramp_us: float = 1.0
    run_us: float = 0.0
    stop_us: float = 0.0
    accel_us: float = 1.0
    stopped_until: int = 0  # externally forced stop (device line stop)

    def speed(self, t: float) -> float:
        if self.kind == "ramp":
            k = min(1.0, max(0.0, t / self.ramp_us))
            return self.full_cps * (self.ramp_from + (self.ramp_to - self.ramp_from) * k)
        if self.kind == "stop-start":
            period = self.run_us + self.stop_us + 2 * self.accel_us
            p = t % period
            if p < self.run_us:
                return self.full_cps
            p -= self.run_us
            if p < self.accel_us:  # decelerate
                return self.full_cps * (1 - p / self.accel_us)
            p -= self.accel_us
            if p < self.stop_us:
                return 0.0
            return self.full_cps * (p - self.stop_us) / self.accel_us
        return self.full_cps

    def steady_for(self, t: float) -> float:
        """How long (profile µs) the speed stays what it is at t: 0 while it changes."""
        if self.kind == "ramp":
            return float("inf") if t >= self.ramp_us else 0.0
        if self.kind == "stop-start":
            period = self.run_us + self.stop_us + 2 * self.accel_us
            p = t % period
            if p < self.run_us:
                return self.run_us - p
            p -= self.run_us + self.accel_us
            return self.stop_us - p if 0 <= p < self.stop_us else 0.0
        return float("inf")


def make_profile(s: Scenario) -> Profile:
    cpm = s.line.counts_per_mm
    full_cps = s.ppm / 60.0 * s.line.pitch_mm * cpm
    unit_us = 60e6 / s.ppm
    sp = s.speed
    return Profile(kind=sp.profile, full_cps=full_cps, unit_us=unit_us, ramp_from=sp.ramp_from,
                   ramp_to=sp.ramp_to, ramp_us=max(1.0, sp.ramp_units * unit_us),
                   run_us=sp.run_units * unit_us, stop_us=sp.stop_ms * 1000,
                   accel_us=max(1.0, sp.accel_ms * 1000))


class LineModel:
    def __init__(self, scenario: Scenario, seed: int | None = None, coder=None, camera=None):
        self.s = scenario
        L = scenario.line
        c = L.counts_per_mm
        self.rng = random.Random(scenario.seed if seed is None else seed)
        self.coder_at, self.camera_at, self.gate_at = (round(L.coder_at_mm * c), round(L.camera_at_mm * c),
                                                       round(L.gate_at_mm * c))
        self.window = L.gate_window_mm * c
        self.lead_us = round(L.gate_lead_ms * 1000)
        self.profile = make_profile(scenario)
        self.confirm_delay_us = round(L.confirm_delay_mm / (self.profile.full_cps / c) * 1e6)
        self.coder, self.camera = coder, camera
        self.t = 0
        self.pt = 0.0  # profile time: stands still while the device holds the line stopped
        self.run_factor = 1.0  # 1 running, 0 stopped by the device (line stop), ramps between
        self.line_stop = False
        self.belt = 0.0  # belt position, counts (float; the encoder reads its floor)
        # packs: the first enters after one pitch, so the device has time to start
        self.packs: list[Pack] = []
        at = L.pitch_mm * c
        for i in range(scenario.units):
            self.packs.append(Pack(i, at, L.pack_length_mm * c))
            at += L.pitch_mm * c * (1 + self.rng.uniform(-L.pitch_spread, L.pitch_spread))
        self.photo_eye = 0
        self._pe_next = 0  # index of the next pack to reach the photo-eye
        self._pe_tail = None  # pack whose trailing edge is still to pass
        self.gate_out = False  # paddle physically out
        self._gate_cmds: list[tuple[int, int]] = []  # (t physical, level), in order
        self._confirms: list[int] = []  # times of pending confirm pulses
        self._pending: list[Edge] = []
        self.gate_events: list[GateEvent] = []
        self.bin_count = 0
        self.bin_full = 0
        self.bin_full_from_unit = scenario.faults.bin_full_at
        self.triggers_without_pack = {"coder": 0, "camera": 0}
        self.boot_ends: list[float] = []  # belt position at each device power cycle

    # --- what the device reads ---
    @property
    def encoder(self) -> int:
        return int(self.belt)

    def offset(self, p: Pack, belt: float | None = None) -> float:
        return (self.belt if belt is None else belt) - p.belt_at

    @property
    def done(self) -> bool:
        """All packs past the gate far enough to have been decided and confirmed."""
        return not self.packs or self.belt > self._done_at

    @property
    def _done_at(self) -> float:
        last = self.packs[-1]
        return last.belt_at + self.gate_at + self.window + self.s.line.confirm_window_mm * self.s.line.counts_per_mm

    def next_event_us(self) -> int:
        """The next time the physical world changes something the device sees, for time jumps."""
        cands = [self.t + 1_000_000]
        v = self.speed()
        if self._pe_next < len(self.packs) and v > 0:
            cands.append(self.t + math.ceil((self.packs[self._pe_next].belt_at - self.belt) / v * 1e6) + 1)
        if self.packs and v > 0:  # the run's end
            cands.append(self.t + math.ceil((self._done_at - self.belt) / v * 1e6) + 1)
        if self._pe_tail is not None and v > 0:
            p = self._pe_tail
            cands.append(self.t + math.ceil((p.belt_at + p.length - self.belt) / v * 1e6) + 1)
        cands += [t for t, _ in self._gate_cmds[:1]] + self._confirms[:1] + [e.t_us for e in self._pending]
        steady = self.steady_us()
        if 0 < steady < float("inf"):  # a change of speed starts
            cands.append(self.t + max(1, int(steady)))
        return max(self.t + 1, min(cands))

    def steady_us(self) -> float:
        """How long (µs) the belt's speed stays what it is now: 0 while it ramps (profile or the
        device's line stop)."""
        if self.line_stop:
            return float("inf") if self.run_factor == 0.0 else 0.0
        if self.run_factor < 1.0:
            return 0.0
        return self.profile.steady_for(self.pt)

    def reaches(self, at: float, t_us: int) -> bool:
        """A pack's leading edge gets to offset `at` (a station) by t_us at the present speed."""
        b1 = self.belt + self.speed() * (t_us - self.t) / 1e6
        return any(self.belt - p.belt_at < at <= b1 - p.belt_at for p in self.packs[: self._pe_next][-8:])

    def encoder_at(self, t_us: int) -> int:
        """What the encoder will read at t_us at the present speed."""
        return int(self.belt + self.speed() * (t_us - self.t) / 1e6)

    def t_at_encoder(self, count: int) -> int:
        """When the encoder reads `count` at the present speed (far ahead if the belt stands)."""
        v = self.speed()
        if v <= 0:
            return self.t + 1_000_000
        return self.t + max(1, math.ceil((count - self.belt) / v * 1e6) + 1)  # +1: past float error

    # --- moving the world ---
    def advance(self, t_us: int) -> list[Edge]:
        """Move the belt to time t_us; return the input edges that happened on the way, in order."""
        while self.t < t_us:
            # one step over a stretch of steady speed (edges are interpolated exactly in it)
            t1 = min(t_us, self.t + max(SUBSTEP_US, min(self.steady_us(), 1e12)))
            if self._gate_cmds and self._gate_cmds[0][0] < t1:
                t1 = max(self.t + 1, self._gate_cmds[0][0])
            v0 = self.speed()
            self._run_factor(t1 - self.t)
            self.pt += (t1 - self.t) * self.run_factor
            v1 = self.speed()
            b0, b1 = self.belt, self.belt + (v0 + v1) / 2 * (t1 - self.t) / 1e6
            self._photo_eye(b0, b1, self.t, t1)
            if self.gate_out:
                self._push(b0, b1)
            self.t, self.belt = t1, b1
            while self._gate_cmds and self._gate_cmds[0][0] <= self.t:
                _, level = self._gate_cmds.pop(0)
                if level and not self.gate_out:
                    self._gate_opened()
                self.gate_out = bool(level)
                if self.gate_out:
                    self._push(self.belt, self.belt)
            while self._confirms and self._confirms[0] <= self.t:
                t = self._confirms.pop(0)
                self._pending += [Edge(t, "confirm", 1), Edge(t + CONFIRM_PULSE_US, "confirm", 0)]
        out = [e for e in self._pending if e.t_us <= t_us]
        self._pending = [e for e in self._pending if e.t_us > t_us]
        return sorted(out, key=lambda e: e.t_us)

    def speed(self) -> float:
        """Belt speed now, counts/s."""
        return self.profile.speed(self.pt) * self.run_factor

    def _run_factor(self, dt: float) -> None:
        k = dt / self.profile.accel_us
        self.run_factor = max(0.0, self.run_factor - k) if self.line_stop else min(1.0, self.run_factor + k)

    def _at(self, target: float, b0: float, b1: float, t0: int, t1: int) -> int:
        return t0 if b1 == b0 else t0 + round((target - b0) / (b1 - b0) * (t1 - t0))

    def _photo_eye(self, b0, b1, t0, t1):
        while True:
            tail = self._pe_tail
            head = self.packs[self._pe_next] if self._pe_next < len(self.packs) else None
            if tail is not None and tail.belt_at + tail.length <= b1 and (
                    head is None or tail.belt_at + tail.length <= head.belt_at):
                self._pending.append(Edge(self._at(tail.belt_at + tail.length, b0, b1, t0, t1), "photo_eye", 0))
                self.photo_eye, self._pe_tail = 0, None
            elif head is not None and head.belt_at <= b1 and tail is None:
                t = self._at(head.belt_at, b0, b1, t0, t1)
                head.detected_t = t
                self._pending.append(Edge(t, "photo_eye", 1))
                if head.index == self.bin_full_from_unit and not self.bin_full:
                    self.bin_full = 1
                    self._pending.append(Edge(t, "bin_full", 1))
                self.photo_eye, self._pe_tail, self._pe_next = 1, head, self._pe_next + 1
            else:
                return

    def _nearest(self, at: float, tol: float) -> Pack | None:
        best, dist = None, tol
        # packs near a station are few; search around the photo-eye index backwards
        for p in reversed(self.packs[: self._pe_next]):
            d = abs(self.offset(p) - at)
            if d <= dist and not p.rejected:
                best, dist = p, d
            if self.offset(p) > at + tol:
                break
        return best

    def near_gate(self, travel: float) -> bool:
        """A pack not yet pushed is within the gate window, or was within `travel` before it."""
        return self._nearest(self.gate_at, self.window + travel) is not None

    def _gate_opened(self):
        p = self._nearest(self.gate_at, self.s.line.pitch_mm * self.s.line.counts_per_mm / 2)
        err = self.offset(p) - self.gate_at if p is not None else float("nan")
        self.gate_events.append(GateEvent(self.t, err, p.index if p else None))

    def _push(self, b0: float, b1: float):
        lo, hi = self.gate_at - self.window, self.gate_at + self.window
        for p in reversed(self.packs[: self._pe_next]):
            o0, o1 = b0 - p.belt_at, b1 - p.belt_at
            if o0 > hi:
                break
            if not p.rejected and o1 >= lo and o0 <= hi:
                p.rejected, p.rejected_offset = True, max(o0, lo) - self.gate_at
                self._confirms.append(self.t + self.confirm_delay_us)
                self._confirms.sort()
                p.in_bin = True
                self.bin_count += 1
                if self.bin_count >= self.s.line.bin_capacity and not self.bin_full:
                    self.bin_full = 1
                    self._pending.append(Edge(self.t, "bin_full", 1))

    def empty_bin(self) -> None:
        """The operator empties the reject bin: its full sensor drops."""
        self.bin_count, self.bin_full = 0, 0
        self._pending.append(Edge(self.t, "bin_full", 0))

    # --- the device's outputs ---
    def output(self, name: str, level: int, t_us: int) -> None:
        """An output edge from the device at t_us (<= the current time is fine)."""
        if name in ("gate_open", "gate_close"):
            name, level = "gate", int(name == "gate_open")
        if name in ("stop_on", "stop_off"):
            self.line_stop = name == "stop_on"
            return
        if name == "gate":
            self._gate_cmds.append((t_us + self.lead_us, level))
            self._gate_cmds.sort()
        elif level and name in ("coder", "camera"):  # a trigger is an edge: level 1 fires
            at = self.coder_at if name == "coder" else self.camera_at
            p = self._nearest(at, self.s.line.pitch_mm * self.s.line.counts_per_mm / 2)
            if p is None:
                self.triggers_without_pack[name] += 1
            if name == "coder":
                self._print(p, t_us)
            else:
                self._inspect(p, t_us)

    def _print(self, p: Pack | None, t_us: int) -> None:
        job = self.coder.trigger(t_us) if self.coder is not None else None
        if p is None:
            return
        p.prints += 1
        if p.prints > 1:
            p.defect = "double_print"
        if job is None:
            p.defect = p.defect or "empty"
            return
        code, fault = job
        p.code = code
        if fault == "skip":
            p.defect = p.defect or "skip"
        elif fault == "misprint":
            p.printed, p.defect = mutate(code, self.rng), p.defect or "misprint"
            if getattr(self.coder, "images", None) is not None:  # its image is made while the pack travels
                self.coder.images.misprinted(p.printed, self.coder.jobs_printed)
        else:
            p.printed = code
            if fault == "smear":
                p.smeared, p.defect = True, p.defect or "smear"

    def _inspect(self, p: Pack | None, t_us: int) -> None:
        if self.camera is None:
            return
        printed = p.printed if p is not None else None
        smeared = p.smeared if p is not None else False
        read, fault = self.camera.trigger(t_us, printed, smeared)
        if p is not None:
            p.read, p.camera_missed = read, fault == "missed_trigger"
            p.camera_n = 0 if p.camera_missed else self.camera.triggers
            if fault and not p.bad:
                p.camera_fault = fault

    def unprinted(self) -> None:
        """After the run: a pack that passed the coder without a trigger has no code."""
        for p in self.packs:
            if p.detected_t is not None and p.prints == 0 and not p.defect:
                p.defect = "unprinted"


def mutate(code: str, rng: random.Random) -> str:
    """One character of the code changed (a wrong digit): what a misprint or a misread looks like."""
    i = len(code) - 1 - rng.randrange(min(6, len(code)))
    ch = code[i]
    new = str((int(ch) + 1 + rng.randrange(9)) % 10) if ch.isdigit() else ("X" if ch != "X" else "Y")
    return code[:i] + new + code[i + 1:]
