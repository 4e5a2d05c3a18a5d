"""The faulty pty wire the link tests use: the simulator's relay; linkdev helpers from `serialine selftest`."""

from serialine.host.sim.faults import FaultyRelay
from serialine.tools.selftest import device_counters, spawn_linkdev, stop_linkdev

__all__ = ["FaultyRelay", "spawn_linkdev", "stop_linkdev", "device_counters"]
