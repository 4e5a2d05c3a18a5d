"""The host agent as its own process, for the simulator (so a scenario can SIGKILL it and start it
again). A thin wrapper around host/agent.py's `Agent`: opens the ledger, the link (pty) and the
coder/camera drivers, configures and starts the line device, then runs the agent loop.

    python -m serialine.host.sim.agent_proc --db DB --batch B --tty PTY --coder HOST:PORT
        --camera HOST:PORT --config JSON

Prints READY once the device is configured and started; runs until SIGTERM or stdin closes. A line
on stdin naming a Command (CLEAR_ALARM, START, ...) is sent to the device: the simulator playing the
operator who has emptied the reject bin.
Restarted on a ledger that knows the device's boot, the agent resumes it (see host/agent.py): the
line is stopped and the coder reset before the operator's CLEAR_ALARM may restart it.
It also follows a device reboot: a new boot_id in the link's HELLO_REPLY starts a new boot in the
ledger (in-flight units of the old boot are purged) and the device is configured and started again."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class BootFollowingLink:
    """The HostLink, watched: when a poll opens a session with a new device boot, the agent is
    moved to it before the poll's events are stored."""

    def __init__(self, link, on_new_boot):
        self._link, self._on_new_boot = link, on_new_boot
        self._boot = None

    def __getattr__(self, name):
        return getattr(self._link, name)

    def connect(self, timeout=5.0):
        hello = self._link.connect(timeout)
        self._boot = hello["boot_id"]
        return hello

    def poll(self, timeout=0.0):
        msgs = self._link.poll(timeout)
        hello = self._link.hello
        if hello is not None and self._boot is not None and hello["boot_id"] != self._boot:
            self._boot = hello["boot_id"]
            self._on_new_boot(hello)
        return msgs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="agent_proc")
    p.add_argument("--db", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--tty", required=True)
    p.add_argument("--coder", required=True)
    p.add_argument("--camera", required=True)
    p.add_argument("--config", required=True, help="device ConfigFields as JSON")
    args = p.parse_args(argv)

    from serialine.host import db as hostdb
    from serialine.host.agent import Agent, AgentError
    from serialine.host.devices.camera import Camera
    from serialine.host.devices.coder import Coder
    from serialine.host.devices.lineclient import DeviceError
    from serialine.host.link import HostLink
    from serialine.protocol.schema import Command

    config = json.loads(args.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    operator: list[str] = []  # commands from the simulator playing the line operator

    def read_stdin():
        for line in sys.stdin:
            operator.append(line.strip())
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()

    conn = hostdb.connect(args.db)
    link = HostLink(args.tty)
    agent = None

    def configure_and_start():
        link.send("CONFIG_SET", config)
        link.send("COMMAND", {"command": int(Command.START), "arg": 0})

    def on_new_boot(hello):
        # the agent's own boot handling: old units purged, coder restarted clean (the UNIT_PRINTED
        # events the device lost with its RAM would otherwise shift every later binding), pairing reset
        agent.on_new_boot(dict(hello))
        configure_and_start()

    watched = BootFollowingLink(link, on_new_boot)
    try:
        agent = Agent(conn, args.batch, watched, Coder(*_addr(args.coder)), Camera(*_addr(args.camera)))
        agent.start(timeout=30)
        if not agent.resuming:  # a resumed device is configured and running; its stop is the agent's
            configure_and_start()
        print("READY", flush=True)
        while not stop.is_set():
            while operator:
                cmd = operator.pop(0)
                if cmd in Command.__members__:
                    agent.command(cmd)  # held while the agent resumes after a restart
            agent.step(0.002)
        # drain what is in flight, then leave
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            agent.step(0.01)
    except (AgentError, DeviceError) as exc:  # the agent's refusal (batch not running, device leased), a device gone
        print(f"agent_proc: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        link.close()
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
