"""Real-time runs put the parts that stand for hardware on SCHED_FIFO (host/sim/rtsched.py): the
simulator's thread and the firmware share one CPU, the other parts keep off it, and everything is left
as it was afterwards. Where the scheduler is not ours to change, nothing changes and the run says so."""

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
    with rtsched.FifoParts(True) as sched:
        if sched.policy == "other":
            pytest.skip("SCHED_FIFO not permitted for this user")
        clock = os.sched_getaffinity(0)
        procs = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
                 for _ in range(2)]
        try:
            device, agent = procs
            assert rtsched.fifo(device.pid, sched.priority(rtsched.DEVICE))
            assert rtsched.fifo(agent.pid, sched.priority(rtsched.AGENT))
            assert _state(device.pid)[:2] == (os.SCHED_FIFO, rtsched.DEVICE)
            assert _state(agent.pid)[:2] == (os.SCHED_FIFO, rtsched.AGENT)
            if len(rtsched._ALL_CPUS[0] or ()) > 1 and rtsched.PIN:
                assert _state(device.pid)[2] == clock
                assert not _state(agent.pid)[2] & clock
        finally:
            for p in procs:
                p.stdin.close()
                p.wait()


@alone
def test_a_part_starts_on_the_default_scheduler_not_the_clocks():
    with rtsched.FifoParts(True) as sched:
        if sched.policy == "other":
            pytest.skip("SCHED_FIFO not permitted for this user")
        clock = _state()
        with rtsched.spawning():
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        try:
            assert _state() == clock  # the clock is back at its priority, on its CPU
            policy, _, cpus = _state(child.pid)
            assert policy == os.SCHED_OTHER and cpus == rtsched._ALL_CPUS[0]
        finally:
            child.stdin.close()
            child.wait()


@alone
def test_threads_started_while_spawning_join_the_clock():
    with rtsched.FifoParts(True) as sched:
        if sched.policy == "other":
            pytest.skip("SCHED_FIFO not permitted for this user")
        clock, tid, go = _state(), [], threading.Event()
        with rtsched.spawning():
            t = threading.Thread(target=lambda: (tid.append(threading.get_native_id()), go.wait()))
            t.start()
            while not tid:
                go.wait(0.001)
        try:
            assert _state(tid[0]) == clock  # it shares the clock's GIL: it runs at the clock's priority
        finally:
            go.set()
            t.join()


@alone
def test_spawning_raises_only_the_threads_started_inside_it():
    """A thread of the process from before (a test runner's, xdist's) stays on the default scheduler:
    only a thread started while spawning joins the clock's priority."""
    go, tids = threading.Event(), []

    def idle():
        tids.append(threading.get_native_id())
        go.wait()

    old = threading.Thread(target=idle)
    old.start()
    try:
        while not tids:
            go.wait(0.001)
        assert os.sched_getscheduler(tids[0]) == os.SCHED_OTHER
        with rtsched.FifoParts(True) as sched:
            if sched.policy == "other":
                pytest.skip("SCHED_FIFO not permitted for this user")
            clock = _state()
            with rtsched.spawning():
                new = threading.Thread(target=idle)
                new.start()
                while len(tids) < 2:
                    go.wait(0.001)
            assert os.sched_getscheduler(tids[0]) == os.SCHED_OTHER  # left as it was
            assert _state(tids[1]) == clock  # started inside: raised
    finally:
        go.set()
        old.join()
        if len(tids) > 1:
            new.join()


@alone
def test_no_thread_or_raised_part_stays_fifo_after_the_block():
    """Threads inherit SCHED_FIFO from the thread that starts them: one started during a real-time
    run (a server's, a pool's) and still alive after it would outrank every later test of the process
    whenever it wakes. So would a part's process still running. All are put back on exit."""
    before = _fifo_tasks()
    go, tids = threading.Event(), []

    def idle():
        tids.append(threading.get_native_id())
        go.wait()

    threads = []
    with rtsched.FifoParts(True) as sched:
        if sched.policy == "other":
            pytest.skip("SCHED_FIFO not permitted for this user")
        threads.append(threading.Thread(target=idle))  # inherits the clock's FIFO
        threads[-1].start()
        with rtsched.spawning():
            threads.append(threading.Thread(target=idle))  # raised to the clock's FIFO on leaving
            threads[-1].start()
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        assert rtsched.fifo(child.pid, sched.priority(rtsched.DEVICE))
        while len(tids) < len(threads):
            go.wait(0.001)
        assert set(tids) <= set(_fifo_tasks())
    try:
        assert _fifo_tasks() == before and not set(tids) & set(before)  # before: none, unless run under chrt
        assert _fifo_tasks(child.pid) == []
        assert all(os.sched_getaffinity(t) == os.sched_getaffinity(0) for t in tids)  # off the clock's CPU too
    finally:
        go.set()
        for t in threads:
            t.join()
        child.stdin.close()
        child.wait()
