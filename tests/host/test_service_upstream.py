"""`[[upstream]] credentials = "env:NAME,…"` in the service: only the named variables are taken from
the environment, each must be set (else one line at start naming the target and the variable), and
no secret reaches the service's log or the ledger. Against a real HTTP capture server on loopback
and the service's own rig (tests/host/test_service.py: the firmware in the unix port)."""

from __future__ import annotations

from pathlib import Path

from serialine.host.epcis.capture_server import CaptureServer

from test_service import Agent, line, wait_for  # noqa: F401  (line: the rig's fixture)

USER, PASSWORD, STRAY = "line-1", "pw-S3cret-9x7", "stray-T0ken-4q2"


def upstream(url: str, names: str) -> str:
    return f'\n[[upstream]]\nkind = "http"\nwhere = "{url}"\ncredentials = "env:{names}"\n'


def ledger_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())


def test_only_the_named_variables_are_used_and_no_secret_is_logged_or_stored(line):
    # a bearer token also in the environment (another target's): taken too, the sink would refuse
    # "either a bearer token or basic auth, not both"; narrowed, the basic pair alone is sent
    env = {"SERIALINE_HTTP_USER": USER, "SERIALINE_HTTP_PASSWORD": PASSWORD, "SERIALINE_HTTP_TOKEN": STRAY}
    with CaptureServer(basic=(USER, PASSWORD)) as capture:
        rig, cfg, db, batch = line(upstream=upstream(capture.url, "SERIALINE_HTTP_USER,SERIALINE_HTTP_PASSWORD"))
        agent = Agent(cfg, batch, env=env)
        try:
            agent.wait_status(lambda s: s["ready"], 120)
            wait_for(lambda: len(capture.events) >= 3, 120, "3 events delivered to the capture server", rig)
            assert agent.stop() == 0, agent.log
        finally:
            agent.kill()
        assert capture.authorizations and all(a and a.startswith("Basic ") for a in capture.authorizations)
    for secret in (PASSWORD, STRAY):
        assert secret not in agent.log
        assert secret.encode() not in ledger_bytes(db)
    assert "Traceback" not in agent.log


def test_a_named_variable_unset_or_empty_is_refused_at_start_in_one_line(line):
    with CaptureServer(basic=(USER, PASSWORD)) as capture:
        rig, cfg, db, batch = line(upstream=upstream(capture.url, "SERIALINE_HTTP_USER,SERIALINE_HTTP_PASSWORD"))
        for env, why in (({}, "is not set"), ({"SERIALINE_HTTP_PASSWORD": ""}, "is empty")):
            agent = Agent(cfg, batch, env={"SERIALINE_HTTP_USER": USER, "SERIALINE_HTTP_TOKEN": STRAY, **env})
            rc = agent.exit_code(120)
            assert rc == 1, agent.log
            errors = agent.errors()
            assert errors == [f"serialine-agent: ERROR [[upstream]] http {capture.url}: credentials ="
                              f" 'env:SERIALINE_HTTP_USER,SERIALINE_HTTP_PASSWORD': environment variable"
                              f" SERIALINE_HTTP_PASSWORD {why}"], agent.log
            assert STRAY not in agent.log and "Traceback" not in agent.log
        assert not capture.authorizations  # nothing was sent
    assert rig.state != 2 and not rig.packs  # the line never ran
