"""The simulator's own parts: scenarios, the physical line, the simulated coder and camera (real TCP
on loopback). The line is driven here by a small position-tracking controller written in the test,
so the model's physics (photo-eye edges, gate lead time, push window, confirm) are checked in isolation."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serialine.host.sim import scenario as sc
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.host.sim.line import LineModel


def small(**kw) -> sc.Scenario:
    return sc.Scenario(units=kw.pop("units", 40), **kw)


class Tracker:
    """Fires outputs by encoder position, like the firmware does; gate fired lead-compensated."""

    def __init__(self, line: LineModel, lead_comp: bool = True, reject=lambda i: False):
        self.line, self.units, self.lead_comp, self.reject = line, [], lead_comp, reject
        self.fired: set[tuple[int, str]] = set()
        self.gate_close_at = None
        self.base = 0  # index of units[0]

    def run(self, step_us=100):
        ln = self.line
        t = 0
        while not ln.done:
            t += step_us
            for e in ln.advance(t):
                if e.name == "photo_eye" and e.level:
                    self.units.append(ln.encoder)
            if self.units and ln.encoder - self.units[0] > 2 * ln.gate_at:
                self.base += 1
                self.units.pop(0)
            v = ln.speed() / 1e6  # counts/us
            for i, pos in enumerate(self.units, self.base):
                off = ln.encoder - pos
                if off > ln.gate_at + ln.window:
                    continue
                for name, at in (("coder", ln.coder_at), ("camera", ln.camera_at)):
                    if off >= at and (i, name) not in self.fired:
                        self.fired.add((i, name))
                        ln.output(name, 1, t)
                        ln.output(name, 0, t)
                lead = v * ln.lead_us if self.lead_comp else 0
                if self.reject(i) and off >= ln.gate_at - lead and (i, "gate") not in self.fired:
                    self.fired.add((i, "gate"))
                    ln.output("gate", 1, t)
                    self.gate_close_at = t + 3000
            if self.gate_close_at is not None and t >= self.gate_close_at:
                ln.output("gate", 0, t)
                self.gate_close_at = None


def test_shipped_scenarios_load():
    names = sc.names()
    for need in ("nominal", "high-speed", "speed-ramp", "noisy-camera", "link-faults",
                 "device-reboot", "host-crash", "bin-full"):
        assert need in names
        assert sc.load(need).name == need


@pytest.mark.parametrize("text,msg", [
    ("units = 0", "units = 0 must be in 1..200000"),
    ("colour = 1", "unknown key 'colour'"),
    ("[line]\ncoder_at_mm = 900", "stations must be in order"),
    ("[speed]\nprofile = 'warp'", "speed.profile"),
    ("[defects]\nmisprint = 2", r"\[defects\] misprint = 2.0 must be in 0..1"),
    ("units = 'many'", "units must be int"),
    ("units = [", "not valid TOML"),
    ("[faults]\nlink_outages = [1]", "link_outages"),
])
def test_bad_scenarios_are_refused_clearly(text, msg):
    with pytest.raises(sc.ScenarioError, match=msg):
        sc.parse(text, "t.toml")


def test_unknown_scenario_name():
    with pytest.raises(sc.ScenarioError, match="shipped: .*nominal"):
        sc.load("no-such-scenario")


@given(st.text(max_size=200))
@settings(max_examples=60, deadline=None)
def test_scenario_parser_never_crashes(text):
    try:
        sc.parse(text)
    except sc.ScenarioError:
        pass


def test_photo_eye_sees_every_pack_once_in_order():
    ln = LineModel(small(units=30))
    edges = []
    t = 0
    while not ln.done:
        t += 5000
        edges += ln.advance(t)
    pe = [e for e in edges if e.name == "photo_eye"]
    assert [e.level for e in pe] == [1, 0] * 30
    assert all(a.t_us <= b.t_us for a, b in zip(pe, pe[1:]))
    assert all(p.detected_t is not None for p in ln.packs)


def test_lead_compensated_gate_rejects_exactly_the_chosen_packs():
    ln = LineModel(small(units=40))
    chosen = {3, 4, 17, 39}
    Tracker(ln, reject=lambda i: i in chosen).run()
    assert {p.index for p in ln.packs if p.rejected} == chosen
    assert ln.bin_count == 4
    assert max(abs(g.error) for g in ln.gate_events) <= 2  # counts


def test_uncompensated_gate_misses_at_speed():
    # 8 ms lead at 1500 ppm is ~80 counts of travel, beyond the 60-count push window
    s = small(units=20, ppm=1500.0)
    ln = LineModel(s)
    Tracker(ln, lead_comp=False, reject=lambda i: i == 5).run()
    assert not ln.packs[5].rejected
    assert ln.gate_events[0].error > ln.window


def test_confirm_pulse_follows_each_push():
    ln = LineModel(small(units=10))
    confirms = []
    tr = Tracker(ln, reject=lambda i: i in (2, 6))
    orig = ln.advance
    ln.advance = lambda t: [e for e in orig(t) if not (e.name == "confirm" and confirms.append(e))]
    tr.run()
    assert [e.level for e in confirms] == [1, 0, 1, 0]


def test_same_seed_same_line_other_seed_other_line():
    a, b, c = LineModel(small(seed=5)), LineModel(small(seed=5)), LineModel(small(seed=6))
    assert [p.belt_at for p in a.packs] == [p.belt_at for p in b.packs]
    assert [p.belt_at for p in a.packs] != [p.belt_at for p in c.packs]


@pytest.mark.parametrize("profile", ["ramp", "stop-start"])
def test_speed_profiles_still_reject_the_right_pack(profile):
    s = sc.Scenario(units=60, ppm=900.0, speed=sc.Speed(profile=profile, run_units=20, stop_ms=200,
                                                         ramp_units=40))
    ln = LineModel(s)
    speeds = {round(ln.profile.speed(t * 10_000)) for t in range(600)}
    assert len(speeds) > 3  # the speed really varies
    Tracker(ln, reject=lambda i: i % 7 == 0).run(step_us=50)
    assert {p.index for p in ln.packs if p.rejected} == {i for i in range(60) if i % 7 == 0}


def test_bin_full_edge_at_the_scenario_unit():
    s = small(units=20, faults=sc.Faults(bin_full_at=12))
    ln = LineModel(s)
    edges = []
    t = 0
    while not ln.done:
        t += 1000
        edges += ln.advance(t)
    full = [e for e in edges if e.name == "bin_full"]
    assert len(full) == 1 and full[0].t_us == ln.packs[12].detected_t


def _client(server):
    c = socket.create_connection(server.address, timeout=5)
    server.connected.wait(5)
    return c, c.makefile("r")


def test_coder_over_tcp_prints_buffer_head_and_reports_faults():
    with SimCoder(misprint=0.5, seed=3) as coder:
        c, r = _client(coder)
        for i in range(4):
            c.sendall(f"PUSH 0109506000134352217{i}\n".encode())
            assert r.readline().strip() == f"OK {i + 1}"
        c.sendall(b"PUSH two words\n")
        assert r.readline().strip() == "ERR bad code"
        c.sendall(b"PUSH 0109506000134352\\x1d10ABC\n")  # GS escaped as in docs/devices.md
        assert r.readline().strip() == "OK 5" and coder.buffer[-1] == "0109506000134352\x1d10ABC"
        c.sendall(b"CLEAR\n")
        assert r.readline().strip() == "OK 0"
        for i in range(4):
            c.sendall(f"PUSH 0109506000134352217{i}\n".encode())
            r.readline()
        jobs = [coder.trigger(t) for t in range(4)]
        assert [j[0] for j in jobs] == [f"0109506000134352217{i}" for i in range(4)]
        assert [r.readline().strip() for _ in range(4)] == [f"PRINTED {j[0]}" for j in jobs]
        assert coder.trigger(9) is None and r.readline().strip() == "EMPTY"
        assert 0 < sum(j[1] == "misprint" for j in jobs) < 4
        c.close()


def test_coder_refuses_overfill_and_changes_nothing():
    with SimCoder() as coder:
        c, r = _client(coder)
        for _ in range(64):
            c.sendall(b"PUSH X\n")
            r.readline()
        c.sendall(b"PUSH Y\nDEPTH\n")
        assert r.readline().strip() == "ERR full" and r.readline().strip() == "OK 64"
        c.close()


def test_camera_delivers_on_the_simulator_clock_in_order():
    with SimCamera(latency_ms=5, jitter_ms=0, seed=1) as cam:
        c, r = _client(cam)
        cam.trigger(1000, "CODE1", False)
        cam.trigger(2000, None, False)
        assert cam.deliver(5999) == []
        assert cam.deliver(7000) == [1, 2]
        assert r.readline().strip() == "READ 1 A ]d2CODE1"
        assert r.readline().strip() == "NOREAD 2"
        c.sendall(b"PING\n")
        assert r.readline().strip() == "PONG"
        c.close()


def test_camera_faults_only_on_good_prints_and_at_their_rates():
    cam = SimCamera(no_read=0.1, misread=0.1, low_grade=0.1, seed=2)
    results = [cam.trigger(i, "010950600013435221ABC123", False) for i in range(2000)]
    counts = {k: sum(f == k for _, f in results) for k in ("no_read", "misread", "low_grade")}
    assert all(120 < v < 280 for v in counts.values()), counts
    assert all(r is None for r, f in results if f == "no_read")
    assert all(r != "010950600013435221ABC123" for r, f in results if f == "misread")
    cam.close()


def _pty_pair_roundtrip(relay, payload: bytes) -> tuple[bytes, bytes]:
    import serial

    dev = serial.Serial(relay.device_path, timeout=0.5)
    host = serial.Serial(relay.host_path, timeout=0.5)
    try:
        dev.write(payload)
        got_host = host.read(len(payload))
        host.write(payload)
        got_dev = dev.read(len(payload))
        return got_host, got_dev
    finally:
        dev.close()
        host.close()


def test_relay_is_transparent_without_faults():
    from serialine.host.sim.faults import FaultyRelay

    data = bytes(range(256)) * 4
    with FaultyRelay() as relay:
        assert _pty_pair_roundtrip(relay, data) == (data, data)


def test_relay_corrupts_and_drops_at_its_rates_and_goes_dark():
    from serialine.host.sim.faults import FaultyRelay

    data = bytes(range(256)) * 8
    with FaultyRelay(corrupt=0.02, loss=0.02, seed=4) as relay:
        to_host, _ = _pty_pair_roundtrip(relay, data)
        st = relay.stats["to_host"]
        assert 10 < st.corrupted < 90 and 10 < st.dropped < 90
        assert len(to_host) == len(data) - st.dropped and to_host != data
        relay.dark = True
        assert _pty_pair_roundtrip(relay, b"hello") == (b"", b"")


def test_relay_duplicates_chunks_at_its_rate():
    from serialine.host.sim.faults import FaultyRelay

    import serial

    with FaultyRelay(dup=1.0, seed=1) as relay:
        dev = serial.Serial(relay.device_path, timeout=0.5)
        host = serial.Serial(relay.host_path, timeout=0.5)
        try:
            dev.write(b"abc")
            assert host.read(7) == b"abcabc"
        finally:
            dev.close()
            host.close()
        assert relay.totals()["duplicated"] == 1 and relay.totals()["bytes"] == 3


def test_a_line_stop_from_the_device_halts_the_belt_and_a_release_restarts_it():
    ln = LineModel(small(units=10))
    ln.advance(200_000)
    ln.output("stop_on", 1, ln.t)
    ln.advance(400_000)  # accel_ms is 100: stopped well before this
    b = ln.belt
    ln.advance(900_000)
    assert ln.belt == b and ln.speed() == 0
    ln.output("stop_off", 1, ln.t)
    ln.advance(1_100_000)
    assert ln.belt > b and ln.speed() == ln.profile.full_cps


def test_host_drivers_understand_the_simulated_devices():
    """The host's own coder/camera drivers (host/devices) against the simulated devices."""
    from serialine.host.devices.camera import Camera
    from serialine.host.devices.coder import Coder

    code = "0109506000134352172811301012345\x1d21ABCDEF123456"
    with SimCoder() as coder, SimCamera(latency_ms=1, jitter_ms=0) as cam:
        hc, hcam = Coder(*coder.address), Camera(*cam.address)
        cam.connected.wait(5)
        assert hc.push(code) == 1 and hc.depth() == 1
        assert coder.trigger(0) == (code, "")
        cam.trigger(0, code, False)
        cam.trigger(10, None, False)
        cam.deliver(10_000)
        import time
        deadline = time.monotonic() + 5
        results = []
        while len(results) < 2 and time.monotonic() < deadline:
            got, errors = hcam.results()
            assert not errors
            results += got
            time.sleep(0.01)
        assert [(r.n, r.grade, r.data) for r in results] == [(1, "A", "]d2" + code), (2, None, None)]
        hc.close()
        hcam.close()
