"""The faulty pty wire the link tests use; it lives with `serialine selftest`, which needs it too."""

from serialine.tools.selftest import PtyRelay, spawn_linkdev, stop_linkdev, device_counters

__all__ = ["PtyRelay", "spawn_linkdev", "stop_linkdev", "device_counters"]
