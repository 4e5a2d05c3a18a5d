"""Real-time runs on a shared machine: the parts that stand for hardware run SCHED_FIFO, as a real-time
deployment of the unix port does (tools/bench_firmware.py), so the load of other work falls on other work.

Measured at load average 10 on two cores, 1,200 packs/min: with the default scheduler a tick of the
simulator waits up to 127 ms for a CPU (the belt travels 1,000 counts between two scans); SCHED_FIFO
with the sim channel on pipes, 6 ms. Priorities: the firmware (a microcontroller on a real line) above
the simulator's clock (physics is never late), above the camera's image worker (the camera's own
processor: no host PC delays it), above the agent (the line's PC, `chrt -f` or systemd
`CPUSchedulingPolicy=fifo` in a deployment).
Every FIFO part sleeps between scans or blocks on I/O; the kernel's RT throttling
(`/proc/sys/kernel/sched_rt_runtime_us`) keeps 5 % of each CPU for everything else regardless.
What is left (load 9–13, 2026-12-01): about one tick in 10,000 wakes 4–30 ms late with the
simulator's thread neither running nor waiting for a CPU (its schedstat), asleep past its timer —
the VM's or this kernel's (PREEMPT_NONE, HZ 250), not the CPU. SERIALINE_RT_PIN=0: no CPU pinning
(to compare)."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading

DEVICE, SIMULATOR, CAMERA, AGENT = 30, 20, 15, 10
PIN = os.environ.get("SERIALINE_RT_PIN", "1") == "1"
SWITCH_INTERVAL_S = 0.0005  # GIL hand-over in the simulator: its clock must not wait 5 ms for a relay thread


def _clock_cpu() -> set[int] | None:
    """The CPU the simulator's clock and the firmware share (the last one this process may use), None
    on a single CPU: a scan's round trip then never waits for another CPU to take the firmware."""
    cpus = sorted(os.sched_getaffinity(0))
    return {cpus[-1]} if len(cpus) > 1 else None


def fifo(pid: int, priority: int | None) -> bool:
    """Put process `pid` (0: the calling thread) on SCHED_FIFO at `priority`; False if not permitted.
    The firmware (DEVICE) shares the simulator's CPU; the agent keeps off it (in a long system call
    there it would hold the clock: this kernel preempts only when the call returns); the image worker,
    numpy in user space, may use every CPU (pinned beside the agent it waited for it, and the clock
    for the worker: 190 ms)."""
    if priority is None:
        return False
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(priority))
        if pid and _RAISED[0] is not None:
            _RAISED[0].add(pid)
        if priority == DEVICE and _CLOCK_CPU[0] is not None:
            os.sched_setaffinity(pid, _CLOCK_CPU[0])
        elif _ALL_CPUS[0] is not None:
            off_clock = priority == AGENT and _CLOCK_CPU[0] is not None
            os.sched_setaffinity(pid, (_ALL_CPUS[0] - _CLOCK_CPU[0]) if off_clock else _ALL_CPUS[0])
        return True
    except (PermissionError, OSError, AttributeError):
        return False


_CLOCK_CPU: list = [None]  # set while FifoParts
_ALL_CPUS: list = [None]
_RAISED: list = [None]  # while FifoParts: the processes fifo() raised


@contextlib.contextmanager
def spawning():
    """Start a part's process from the simulator's thread inside this: the child starts on the default
    scheduler and every CPU, then `fifo()` raises it. (Inheriting SCHED_FIFO, it would run its whole
    start-up on the clock's CPU at the clock's priority, which no equal priority preempts, and keep the
    threads it starts meanwhile there: a FIFO agent thread holding the clock's CPU for 200 ms.) Threads
    started in here are raised to the clock's priority on leaving; threads that were there before (a
    test runner's, a pool's started earlier) are left as they are."""
    try:
        was = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority, os.sched_getaffinity(0)
    except (OSError, AttributeError):
        yield
        return
    if was[0] != os.SCHED_FIFO:
        yield
        return
    before = set(_threads())  # not raised on leaving: only what starts in here joins the clock
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    if _ALL_CPUS[0] is not None:
        os.sched_setaffinity(0, _ALL_CPUS[0])
    try:
        yield
    finally:
        os.sched_setscheduler(0, was[0], os.sched_param(was[1]))
        os.sched_setaffinity(0, was[2])
        # threads started meanwhile (a process pool's manager) share the clock's GIL: on the default
        # scheduler one preempted while holding it holds the clock a scheduler tick (4 ms)
        for tid in set(_threads()) - before:
            with contextlib.suppress(OSError):  # ended meanwhile
                if os.sched_getscheduler(tid) != os.SCHED_FIFO:
                    os.sched_setscheduler(tid, was[0], os.sched_param(was[1]))
                    os.sched_setaffinity(tid, was[2])


def _threads(pid: int | str = "self") -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # no procfs (the threads stay as they started), or the process has ended
        return []


def _fifo_threads(pid: int | str = "self") -> set[int]:
    fifo_ = set()
    for tid in _threads(pid):
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(tid) == os.SCHED_FIFO:
                fifo_.add(tid)
    return fifo_


def _lower(tids, cpus) -> None:
    """Back to the default scheduler (and every CPU): a thread left FIFO outranks whatever this
    process or machine runs next whenever it wakes (a pytest worker's later tests)."""
    for tid in tids:
        with contextlib.suppress(OSError):  # ended meanwhile
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            if cpus is not None:
                os.sched_setaffinity(tid, cpus)


class FifoParts:
    """`with FifoParts(on) as sched:` the calling thread, the threads it starts (the relay, the coder and
    camera servers) and the processes it starts on SCHED_FIFO at SIMULATOR; each part's process is then
    set to its own priority (`fifo(pid, sched.priority(DEVICE))`). `sched.policy` "fifo" or "other"
    (off, or not permitted: no CAP_SYS_NICE). On exit the calling thread is left as it was, and every
    other thread of this process and of the processes raised that is FIFO now and was not before is
    put back on the default scheduler (threads inherit the policy of the thread that starts them)."""

    def __init__(self, on: bool = True):
        self.on, self.policy = on, "other"
        self._was = None
        self._fifo_before: set[int] = set()

    def __enter__(self) -> FifoParts:
        if not self.on:
            return self
        try:
            was = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority, sys.getswitchinterval())
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SIMULATOR))
        except (PermissionError, OSError, AttributeError):
            return self
        self._was, self.policy = was, "fifo"
        self._fifo_before = _fifo_threads() - {threading.get_native_id()}
        _RAISED[0] = set()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        gc.freeze()  # what exists now is never collected again: a full collection then takes 0.1 s less
        if PIN:
            _ALL_CPUS[0], _CLOCK_CPU[0] = os.sched_getaffinity(0), _clock_cpu()
            if _CLOCK_CPU[0] is not None:
                os.sched_setaffinity(0, _CLOCK_CPU[0])
        return self

    def priority(self, part: int) -> int | None:
        """The priority to give a part's process, None when not raising."""
        return part if self.policy == "fifo" else None

    def __exit__(self, *exc) -> None:
        if self._was is None:
            return
        policy, prio, switch = self._was
        os.sched_setscheduler(0, policy, os.sched_param(prio))
        sys.setswitchinterval(switch)
        gc.unfreeze()
        cpus = _ALL_CPUS[0]
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        _lower(_fifo_threads() - self._fifo_before - {threading.get_native_id()}, cpus)
        for pid in _RAISED[0] or ():  # parts still running (they are normally down by now)
            _lower(_fifo_threads(pid), cpus)
        _ALL_CPUS[0] = _CLOCK_CPU[0] = _RAISED[0] = None
        self._was = None
