"""Serialine's coder line protocol: one escape for GS on both sides (driver and simulated devices),
and the driver's print reports with their stream epochs (a new connection, a confirmed CLEAR)."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from serialine.host.devices import lineclient
from serialine.host.devices.coder import Coder
from serialine.host.sim import camera as sim_camera
from serialine.host.sim import coder as sim_coder
from serialine.host.sim.coder import SimCoder

GS = "\x1d"
CODE = "0109506000134352" + GS + "21AB{}"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789ABCxyz%&/") + [GS]), max_size=60))
def test_one_escape_round_trips_and_never_leaves_a_gs_on_the_line(code):
    line = lineclient.escape_code(code)
    assert GS not in line and line.isprintable() and lineclient.unescape_code(line) == code
    assert sim_coder.escape is lineclient.escape_code and sim_coder.unescape is lineclient.unescape_code
    assert sim_camera.escape is lineclient.escape_code  # the simulated camera writes what the driver reads


def test_the_simulated_coder_reads_the_upper_case_escape_like_the_drivers():
    with SimCoder() as sc:
        c = Coder(*sc.address)
        try:
            c.request("PUSH 0109506000134352\\x1D21AB1", r"OK \d+")
            assert list(sc.buffer) == [CODE.format(1)]
        finally:
            c.close()


def _until(pred, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(0.005)
    return pred()


def test_print_reports_carry_the_code_and_a_new_epoch_after_a_clear_or_a_new_connection():
    with SimCoder() as sc:
        c = Coder(*sc.address)
        try:
            for i in range(3):
                c.push(CODE.format(i))
            e0 = c.epoch
            sc.trigger(0)
            assert _until(lambda: c.printed == 1)
            assert c.printed_codes() == [(e0, CODE.format(0))] and c.printed_codes() == []
            c.clear()
            assert c.epoch == e0 + 1
            c.push(CODE.format(3))
            sc.drop()
            assert _until(lambda: c.closed)
            c.depth()  # reconnects
            assert c.epoch == e0 + 2
            sc.trigger(1)
            assert _until(lambda: c.printed == 2) and c.printed_codes() == [(e0 + 2, CODE.format(3))]
        finally:
            c.close()
