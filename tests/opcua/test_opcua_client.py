"""host/opcua/client.py's session against a real server that is slow but alive (a loaded machine, a
long ledger read on the server's loop): asyncua's liveness probe must not take it for a dead one."""

from __future__ import annotations

import time

from asyncua import ua

from serialine.host.opcua.client import TIMEOUT_S

from opcuakit import run, session

BUSY_S = 3.0  # well above asyncua's default probe wait (1 s), well below the request timeout


def test_a_server_busy_for_seconds_keeps_the_session(site):
    assert BUSY_S * 3 <= TIMEOUT_S

    async def go():
        async with session(site) as pc:
            state = pc.client.nodes.server_state
            site.loop.call_soon_threadsafe(time.sleep, BUSY_S)  # the server's loop answers nothing meanwhile
            assert await state.read_value() == ua.ServerState.Running  # answered once the loop is free
            # the session outlived it: a probe given up on would have dropped it (ConnectionError)
            assert await state.read_value() == ua.ServerState.Running
    run(go())
