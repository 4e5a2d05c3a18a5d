"""Virtual commissioning: `serialine sim --realtime --opcua opc.tcp://127.0.0.1:PORT` serves the line's
OPC UA interface during a simulated run; an independent asyncua client sees the line in Execute."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from serialine.host.opcua.packml import LINE
from serialine.host.opcua.server import NAMESPACE, PACKML_NS

from opcuakit import free_port, session


class Endpoint:
    def __init__(self, endpoint, pki):
        self.endpoint, self.pki = endpoint, pki


async def execute_state(pc):
    c = pc.client
    pk = await c.get_namespace_index(PACKML_NS)
    line = await c.nodes.objects.get_child(f"{await c.get_namespace_index(NAMESPACE)}:{LINE}")
    node = await line.get_child([f"{pk}:BaseStateMachine", f"{pk}:MachineState", f"{pk}:ExecuteState", "0:CurrentState"])
    return node, line, pk


@pytest.mark.alone  # a real-time run: its parts run SCHED_FIFO as root (host/sim/rtsched.py), beside other tests
def test_a_client_sees_execute_during_a_simulated_run(tmp_path, users_file):
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "serialine.host.cli", "sim", "--scenario", "nominal", "--realtime",
                             "--units", "400", "--out", str(out), "--quiet", "--opcua", endpoint,
                             "--opcua-users", str(users_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    ep = Endpoint(endpoint, tmp_path / "client-pki")

    async def go():
        end = time.monotonic() + 120
        while True:  # the agent starts its server once the simulated line is up
            try:
                async with session(ep, "vera") as pc:
                    node, line, pk = await execute_state(pc)
                    seen = []
                    while time.monotonic() < end:
                        text = (await node.read_value()).Text
                        if not seen or seen[-1] != text:
                            seen.append(text)
                        if text == "Execute":
                            admin = await line.get_child(f"{pk}:Admin")
                            return seen, await (await admin.get_child(f"{pk}:ProdProcessedCount")).read_value()
                        await asyncio.sleep(0.2)
                    return seen, None
            except Exception:
                if time.monotonic() > end or proc.poll() is not None:
                    raise
                await asyncio.sleep(1.0)
    try:
        seen, counters = asyncio.run(go())
        assert seen[-1] == "Execute", seen
        assert counters and counters[0].Name == "processed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # the simulator stops its agent in order
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stderr = proc.stderr.read()
        assert "Traceback" not in stderr, stderr
    assert "opcua: serving" in (out / "serialine.agent.log").read_text(), stderr
