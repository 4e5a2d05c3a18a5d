"""The image path keeps off the simulator's clock (host/verify/imager.py): a misprint is imaged by the
worker while its pack travels, a blank carton is graded once; what the camera reports is the same as
measuring the print at the trigger, and a defective print is still a reject."""

from dataclasses import replace

from serialine.host.sim import scenario
from serialine.host.verify.imager import Imager

CODES = ["01095060001343521728113010L00001-1\x1d21P00F0YNY3P", "01095060001343521728113010L00001-1\x1d21Y785ULMSD5"]


def _print(**over):
    return replace(scenario.load("images").print, **over)


def test_a_misprint_imaged_by_the_worker_reads_as_if_imaged_at_the_camera():
    worker, here = Imager(_print(), 300, seed=4), Imager(_print(), 300, seed=4)
    try:
        worker.misprinted(CODES[1], 7)  # the line changed print 7's code: the worker images it now
        got = worker.look(CODES[1], False, 7)
        assert got == here.look(CODES[1], False, 7) == (CODES[1], "A", "")
        assert worker.stats()["measured_here"] == 0 and here.stats()["measured_here"] == 1
        assert not any(worker._ready.values())
    finally:
        worker.close()
        here.close()


def test_a_defective_misprint_is_still_a_reject_from_a_real_decode():
    im = Imager(_print(clogged=1.0, clogged_rows=18), 300, seed=2)  # every print 18 nozzle rows short
    try:
        faults = set()
        for n in range(1, 9):
            im.misprinted(CODES[n % 2], n)
        for n in range(1, 9):
            read, grade, fault = im.look(CODES[n % 2], False, n)
            assert fault in ("no_read", "low_grade") or grade in "ABC"
            faults.add(fault)
        assert faults & {"no_read", "low_grade"}
        assert im.stats()["measured_here"] == 0
    finally:
        im.close()


def test_a_blank_carton_is_graded_once_and_reads_nothing():
    im = Imager(_print(), 300, seed=1)
    try:
        im.start()
        assert im._blank_found == (None, "")
        assert im.look(None, False, 3) == im.look(None, False, 4) == (None, "", "")
        assert im.stats() == {"camera_waits": 0, "camera_wait_ms": 0.0, "measured_here": 0}
    finally:
        im.close()
