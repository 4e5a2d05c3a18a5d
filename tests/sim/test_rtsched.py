"""Real-time runs put the parts that stand for hardware on SCHED_FIFO (host/sim/rtsched.py): the
simulator's thread and the firmware share one CPU, the other parts keep off it, and everything is left
as it was afterwards. Where the scheduler is not ours to change, nothing changes and the run says so."""

import contextlib
import os
import subprocess
import sys
import threading

import pytest

from serialine.host.sim import rtsched


# raising priorities for real (as root) takes a CPU from whatever runs beside: these run alone
alone = pytest.mark.alone


def _state(pid: int = 0):
    return os.sched_getscheduler(pid), os.sched_getparam(pid).sched_priority, os.sched_getaffinity(pid)


def _fifo_tasks(pid="self") -> list[int]:
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    return [t for t in tids if os.sched_getscheduler(t) == os.SCHED_FIFO]


@contextlib.contextmanager
def _fifo():
    """FifoParts(True) entered; the test skipped where SCHED_FIFO is not permitted for this user."""
    with rtsched.FifoParts(True) as sched:
        if sched.policy == "other":
            pytest.skip("SCHED_FIFO not permitted for this user")
        yield sched


def _process():
    """A part's process (it waits on its stdin): its pid, and the call that ends it."""
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)

    def end():
        p.stdin.close()
        p.wait()
    return p.pid, end


class _Idle:
    """Threads that idle until `stop()`; `tids`: their native ids, once each has run."""

    def __init__(self):
        self.go, self.tids, self.threads = threading.Event(), [], []

    def start(self):
        self.threads.append(threading.Thread(target=self._idle))
        self.threads[-1].start()

    def _idle(self):
        self.tids.append(threading.get_native_id())
        self.go.wait()

    def running(self) -> list[int]:
        while len(self.tids) < len(self.threads):
            self.go.wait(0.001)
        return self.tids

    def stop(self):
        self.go.set()
        for t in self.threads:
            t.join()


def _thread():
    """A thread (it idles): its native id, and the call that ends it."""
    idle = _Idle()
    idle.start()
    return idle.running()[0], idle.stop


def test_off_changes_nothing():
    before, switch = _state(), sys.getswitchinterval()
    with rtsched.FifoParts(False) as sched:
        assert sched.policy == "other" and sched.priority(rtsched.DEVICE) is None
        assert _state() == before
        assert not rtsched.fifo(0, sched.priority(rtsched.AGENT))  # None: left as started
    assert _state() == before and sys.getswitchinterval() == switch


@alone
def test_on_raises_the_clock_and_puts_it_back():
    before, switch = _state(), sys.getswitchinterval()
    with rtsched.FifoParts(True) as sched:
        if sched.policy == "other":  # no CAP_SYS_NICE here: the run goes on, unchanged
            assert _state() == before
            pytest.skip("SCHED_FIFO not permitted for this user")
        policy, prio, cpus = _state()
        assert (policy, prio) == (os.SCHED_FIFO, rtsched.SIMULATOR)
        assert sys.getswitchinterval() == rtsched.SWITCH_INTERVAL_S
        if len(before[2]) > 1 and rtsched.PIN:
            assert len(cpus) == 1 and cpus <= before[2]
        assert sched.priority(rtsched.DEVICE) == rtsched.DEVICE
    assert _state() == before and sys.getswitchinterval() == switch


@alone
def test_the_firmware_shares_the_clocks_cpu_and_the_agent_keeps_off_it():
    with _fifo() as sched:
        clock = os.sched_getaffinity(0)
        (device, end_device), (agent, end_agent) = _process(), _process()
        try:
            assert rtsched.fifo(device, sched.priority(rtsched.DEVICE))
            assert rtsched.fifo(agent, sched.priority(rtsched.AGENT))
            assert _state(device)[:2] == (os.SCHED_FIFO, rtsched.DEVICE)
            assert _state(agent)[:2] == (os.SCHED_FIFO, rtsched.AGENT)
            if len(rtsched._ALL_CPUS[0] or ()) > 1 and rtsched.PIN:
                assert _state(device)[2] == clock
                assert not _state(agent)[2] & clock
        finally:
            end_device()
            end_agent()


@alone
@pytest.mark.parametrize("start, expect", [
    # a part's process starts on the default scheduler, on every CPU, not the clock's
    (_process, lambda clock: (os.SCHED_OTHER, 0, rtsched._ALL_CPUS[0])),
    # a thread shares the clock's GIL: it runs at the clock's priority, on its CPU
    (_thread, lambda clock: clock)], ids=["process", "thread"])
def test_what_starts_while_spawning(start, expect):
    with _fifo():
        clock = _state()
        with rtsched.spawning():
            started, end = start()
        try:
            assert _state() == clock  # the clock is back at its priority, on its CPU
            assert _state(started) == expect(clock)
        finally:
            end()


@alone
def test_spawning_raises_only_the_threads_started_inside_it():
    """A thread of the process from before (a test runner's, xdist's) stays on the default scheduler:
    only a thread started while spawning joins the clock's priority."""
    idle = _Idle()
    idle.start()
    try:
        tids = idle.running()
        assert os.sched_getscheduler(tids[0]) == os.SCHED_OTHER
        with _fifo():
            clock = _state()
            with rtsched.spawning():
                idle.start()
                idle.running()
            assert os.sched_getscheduler(tids[0]) == os.SCHED_OTHER  # left as it was
            assert _state(tids[1]) == clock  # started inside: raised
    finally:
        idle.stop()


@alone
def test_no_thread_or_raised_part_stays_fifo_after_the_block():
    """Threads inherit SCHED_FIFO from the thread that starts them: one started during a real-time
    run (a server's, a pool's) and still alive after it would outrank every later test of the process
    whenever it wakes. So would a part's process still running. All are put back on exit."""
    before = _fifo_tasks()
    idle = _Idle()
    with _fifo() as sched:
        idle.start()  # inherits the clock's FIFO
        with rtsched.spawning():
            idle.start()  # raised to the clock's FIFO on leaving
            child, end = _process()
        assert rtsched.fifo(child, sched.priority(rtsched.DEVICE))
        tids = idle.running()
        assert set(tids) <= set(_fifo_tasks())
    try:
        assert _fifo_tasks() == before and not set(tids) & set(before)  # before: none, unless run under chrt
        assert _fifo_tasks(child) == []
        assert all(os.sched_getaffinity(t) == os.sched_getaffinity(0) for t in tids)  # off the clock's CPU too
    finally:
        idle.stop()
        end()
