"""The simulator's errors, in a module of their own so that every part (parts.py, run.py, ...) can
raise them without importing the orchestrator."""

from __future__ import annotations


class RunError(RuntimeError):
    """The run could not start or finish (a part missing or refusing); the message says which."""


class Interrupted(RunError):
    """Ctrl-C (SIGINT): the line was stopped and the batch aborted (or left resumable); the message
    says which."""
