"""The real firmware (boards/sim/simmain.py -> firmware/device.py) in the MicroPython unix
port: link on a pty through pyserial (HostLink), line I/O on the sim channel in virtual time."""

from __future__ import annotations

from serialine.protocol.schema import ConfigFields
from serialine.host.link import HostLink
from serialine.host.sim.unixboard import UnixBoard
from serialine.host.sim.faults import FaultyRelay

CFG = dict(config_id=7, coder_at=400, camera_at=800, gate_at=2000, confirm_from=2100,
           confirm_to=2600, counts_per_mm_milli=1000, gate_lead_us=5000, dwell=150,
           dwell_unit=0, debounce_us=200, min_pitch=100, deadline_margin=100,
           max_speed_cps=20000, min_host_budget_us=10000, reject_streak_limit=0,
           link_timeout_ms=1000, link_stop_ms=0, purge_counts=0, virtual_speed_cps=0,
           stall_ms=500, policy=0)
assert list(CFG) == [sc.name for sc in ConfigFields.subcons]


def wait_for(host, name, timeout=5.0, seen=None, board=None, t_us=100):
    """Poll the host link for `name`. With `board` (virtual time), scan it at `t_us` meanwhile: the
    sim board applies host messages at its scans, as a device applies them in its loop."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if board is not None:
            board.step(t_us, 0, 0)
        for msg, fields in host.poll(0.05):
            host.ack_delivered()
            if seen is not None:
                seen.append((msg, fields))
            if msg == name:
                return fields
    raise AssertionError(f"no {name}")


def test_firmware_end_to_end_on_a_pty(tmp_path):
    with FaultyRelay() as relay, UnixBoard(relay.device_path, cfg_path=tmp_path / "s.cfg") as sb:
        host = HostLink(relay.host_path)
        try:
            sb.step(100, 0, 0)  # a scan before any host has said HELLO
            hello = host.connect()
            assert hello["state"] == 0 and 0 <= hello["boot_id"] < 2**30  # BOOT: no config yet
            assert hello["board"] == "sim" and hello["next_unit_seq"] == 0
            host.send("CONFIG_SET", dict(CFG, gate_at=700))  # out of order: refused
            seen: list = []
            rep = wait_for(host, "CONFIG_REPORT", seen=seen, board=sb)
            assert not [f for m, f in seen if m == "ALARM"]  # no host before HELLO is not a lost link
            assert (rep["result"], rep["bad_field"]) == (1, 3)
            host.send("CONFIG_SET", CFG)
            rep = wait_for(host, "CONFIG_REPORT", board=sb)
            assert rep["result"] == 0 and rep.get("config", rep)["gate_at"] == 2000
            host.send("COMMAND", dict(command=1, arg=0))  # START
            outcomes: dict[int, dict] = {}
            detected, inspected = [], []
            gate_opens = 0
            confirm_at: list[int] = []
            travel, t, n_packs, pitch, first = 0, 0, 10, 400, 300
            while len(outcomes) < n_packs and t < 10_000_000:
                t += 200
                travel += 2  # 10000 counts/s
                x = travel - first
                pe = int(0 <= x < n_packs * pitch and x % pitch < 150)
                confirm = int(any(c <= travel < c + 20 for c in confirm_at))
                edges, status = sb.step(t, travel, pe, confirm)
                for e in edges:
                    if e.name == "gate_open":  # that pack falls into the chute
                        confirm_at.append(e.pos + 350)
                        gate_opens += 1
                for msg, f in host.poll(0):
                    if msg == "UNIT_DETECTED":
                        detected.append(f["unit_seq"])
                    elif msg == "UNIT_INSPECTED":
                        inspected.append(f["unit_seq"])
                        bad = f["unit_seq"] % 3 == 0
                        host.send("VERDICT", dict(unit_seq=f["unit_seq"], verdict=2 if bad else 1,
                                                  reason=18 if bad else 0))
                    elif msg == "UNIT_OUTCOME":
                        assert f["unit_seq"] not in outcomes
                        outcomes[f["unit_seq"]] = f
                host.ack_delivered()
            assert detected == inspected == list(range(n_packs))
            for u in range(n_packs):
                o = outcomes[u]
                want = (2, 18) if u % 3 == 0 else (1, 0)
                assert (o["outcome"], o["reason"]) == want, (u, o)
                assert abs(o["gate_error"]) <= 2
            assert gate_opens == 4 and status.in_flight == 0 and status.alarms == 0
        finally:
            host.close()
        out = sb.close()
    assert "EXIT" in out and "Traceback" not in out


def test_config_survives_a_reboot_and_a_corrupt_file_boots_unconfigured(tmp_path):
    cfg = tmp_path / "s.cfg"
    for expect_state in (0, 1):
        with FaultyRelay() as relay, UnixBoard(relay.device_path, cfg_path=cfg) as sb:
            host = HostLink(relay.host_path)
            try:
                hello = host.connect()
                assert hello["state"] == expect_state
                if expect_state == 0:
                    host.send("CONFIG_SET", CFG)
                    assert wait_for(host, "CONFIG_REPORT", board=sb)["result"] == 0
                else:
                    host.send("CONFIG_GET", {})
                    assert (lambda r: r.get("config", r))(wait_for(host, "CONFIG_REPORT", board=sb))["config_id"] == 7
            finally:
                host.close()

    cfg.write_bytes(cfg.read_bytes()[:-3] + b"999")
    with FaultyRelay() as relay, UnixBoard(relay.device_path, cfg_path=cfg) as sb:
        assert "checksum mismatch" in sb.boot_line
        host = HostLink(relay.host_path)
        try:
            hello = host.connect()
            assert hello["state"] == 0

        finally:
            host.close()


def test_real_time_mode_wall_clock_and_virtual_encoder(tmp_path):
    import time

    with FaultyRelay() as relay, UnixBoard(relay.device_path, cfg_path=tmp_path / "s.cfg",
                                       realtime=True) as sb:
        host = HostLink(relay.host_path)
        try:
            host.connect()
            # a long decision window (about 1.1 s) so a loaded test host still answers in time
            host.send("CONFIG_SET", dict(CFG, virtual_speed_cps=10000, debounce_us=0,
                                         gate_at=12000, confirm_from=12100, confirm_to=12600))
            assert wait_for(host, "CONFIG_REPORT")["result"] == 0
            host.send("COMMAND", dict(command=1, arg=0))  # START
            edges, outcomes = [], {}

            def serve(seconds):  # the host answers while the line runs
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    for msg, f in host.poll(0.002):
                        if msg == "UNIT_INSPECTED":
                            host.send("VERDICT", dict(unit_seq=f["unit_seq"], verdict=1, reason=0))
                        elif msg == "UNIT_OUTCOME":
                            outcomes[f["unit_seq"]] = (f["outcome"], f["reason"])
                    host.ack_delivered()
                    edges.extend(sb.read_edges(0))

            for _ in range(3):  # three packs, 20 ms each, 100 ms apart (200 / 1000 counts)
                sb.set_inputs(1)
                serve(0.02)
                sb.set_inputs(0)
                serve(0.08)
            end = time.monotonic() + 10
            while len(outcomes) < 3 and time.monotonic() < end:
                serve(0.1)
            assert outcomes == {0: (1, 0), 1: (1, 0), 2: (1, 0)}
            coder = [e for e in edges if e.name == "coder"]
            camera = [e for e in edges if e.name == "camera"]
            assert len(coder) == len(camera) == 3
            # the encoder is virtual: positions follow the wall clock at 10000 counts/s
            # (a scan preempted by the host OS may fire late, so no fixed window in time)
            for a, b in zip(coder, camera):
                dt, dpos = (b.t_us - a.t_us) & (2**30 - 1), (b.pos - a.pos) & (2**30 - 1)
                # never early; late only by what the OS took (the positions and times agree)
                assert dpos >= 200 and abs(dt / 100 - dpos) <= 2, (a, b)
            assert not [e for e in edges if e.name.startswith("gate")]
        finally:
            host.close()


def test_a_watchdog_restart_is_reported_at_hello_and_as_an_alarm(tmp_path):
    with FaultyRelay() as relay, UnixBoard(relay.device_path, cfg_path=tmp_path / "s.cfg",
                                       reset_cause=2) as sb:
        host = HostLink(relay.host_path)
        try:
            assert host.connect()["reset_cause"] == 2
            alarm = None
            for _ in range(50):  # the device scans only when stepped (virtual time)
                sb.step(0, 0, 0)
                for msg, f in host.poll(0.01):
                    if msg == "ALARM":
                        alarm = f
                host.ack_delivered()
                if alarm:
                    break
            assert alarm is not None and (alarm["alarm"], alarm["active"]) == (8, 1)
        finally:
            host.close()
