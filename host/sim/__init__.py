"""The line simulator: the physical line, simulated coder and camera, faults, scenarios, reports.

`serialine sim` (cli.py) runs one batch end to end: the firmware in the MicroPython unix port,
the host agent over a pty, the simulated devices over loopback TCP, SQLite for the ledger."""
