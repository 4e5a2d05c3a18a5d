"""Hypothesis on the reader drivers' parsers: any line gives a CameraResult the agent may act on or a
one-line CameraLineError, never another exception; and any bytes sent by a "reader" over a real
loopback connection leave the driver's reader thread alive and its next good result intact."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from serialine.host.devices import dataman, keyence, registry
from serialine.host.devices.camera import MAX_DATA, CameraLineError
from serialine.host.devices.textreader import ResultFormat
from serialine.host.sim.dataman_emu import DataManEmu
from serialine.host.sim.keyence_emu import KeyenceEmu

from test_readers import Collect  # noqa: E402

FORMATS = {
    "dataman": (dataman.DEFAULT_RESULT, dataman.DEFAULT_NO_READ, None),
    "keyence-sr": (keyence.DEFAULT_RESULT, keyence.DEFAULT_NO_READ, None),
    "text-numbered": (r"READ (?P<n>\d+) (?P<grade>\S+) (?P<data>\S+)", r"NOREAD (?P<n>\d+)", "reader"),
    "text-symbology": (r"(?P<symbology>\]..)(?P<data>[^|]*)\|(?P<grade>.*)", r"NR|NOREAD", None),
}
GRADES = st.sampled_from(["A", "B", "C", "D", "F", "0", "0.0", "2.5", "4.0", "4.1", "E", "", "AA", "-1"])
DATA = st.text(alphabet=st.characters(min_codepoint=0x1D, max_codepoint=0x7F), max_size=220)
LINES = st.one_of(
    st.text(max_size=300),
    st.builds(lambda g, d: f"{g},]d2{d}", GRADES, DATA),
    st.builds(lambda g, d: f"]d2{d}:{g}", GRADES, DATA),
    st.builds(lambda n, g, d: f"READ {n} {g} ]d2{d}", st.integers(-5, 10 ** 10), GRADES, DATA),
    st.builds(lambda n: f"NOREAD {n}", st.integers(-5, 10 ** 10)),
    st.sampled_from(["NOREAD", "ERROR", "NR", "]d2|X|A", "]Q3abc|4.0"]),
)


def _check(fmt: ResultFormat, line: str):
    try:
        r = fmt.parse(line)
    except CameraLineError as exc:
        assert len(str(exc)) < 300 and "\n" not in str(exc)
        return None
    assert r.n >= 1
    if r.data is None:
        assert r.grade is None
    else:
        assert 3 < len(r.data) <= MAX_DATA and r.data[0] == "]"
        assert all(c == "\x1d" or " " < c < "\x7f" for c in r.data)
        assert r.grade in {"A", "B", "C", "D", "F"} or 0.0 <= float(r.grade) <= 4.0
    return r


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, min_size=1, max_size=8))
def test_result_parser_returns_a_result_or_says_why(name, lines):
    fmt = ResultFormat(*FORMATS[name])
    for i, line in enumerate(lines, 1):
        r = _check(fmt, line)
        if r is not None and not fmt.reader_counts:
            assert r.n == i  # the driver counts every line, used or not


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["result", "no_read", "trigger_count", "timeout", "setup", "x"]),
                       st.one_of(st.text(max_size=40), st.integers(), st.none(), st.booleans(),
                                 st.lists(st.text(max_size=10), max_size=2)), max_size=4))
def test_check_options_raises_only_value_error(options):
    for name in ("text", "dataman", "keyence-sr"):
        try:
            registry.check_options("reader", name, options)
        except ValueError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 400


CHUNKS = st.lists(st.one_of(st.binary(max_size=80), st.sampled_from(
    [b"||0:3[0]x\r\n", b"||[1]A,]d2X\r\n", b"||\r\n", b"OK,LON\r", b"ER,WP,02\r", b"\r\n\r\n",
     b"y" * 700, b"A,]d2" + b"9" * 300 + b"\r\n"])), max_size=6)


@pytest.mark.parametrize("name,emu_cls,good", [
    ("dataman", DataManEmu, "A,]d2GOOD"), ("keyence-sr", KeyenceEmu, "]d2GOOD:A")])
def test_any_bytes_from_the_reader_leave_the_driver_working(name, emu_cls, good):
    errors = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        with emu_cls() as emu:
            reader = registry.open_reader(name, *emu.address, {})
            emu.connected.wait(5)
            got = Collect(reader)

            @settings(max_examples=60, deadline=None)
            @given(CHUNKS)
            def blast(chunks):
                with emu._lock:
                    for c in chunks:
                        emu._client.sendall(c)
                    emu._client.sendall(b"\r\n" + good.encode() + b"\r\n")  # ends any partial line first
                before = sum(r.data == "]d2GOOD" for r in got.results)
                got.until(lambda c: sum(r.data == "]d2GOOD" for r in c.results) > before)
                assert not reader.closed

            blast()
            assert errors == []
            reader.close()
    finally:
        threading.excepthook = old_hook


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
                 st.builds(lambda h, c: f"||{h}>{c}", st.sampled_from(["", "0", "1", "0:5", "1:9", "2", "x:1", ":"]),
                           st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)),
                 st.builds(lambda w, p: ",".join([w, *p]), st.sampled_from(["LON", "LOFF", "RP", "WP", "KEYENCE", "X"]),
                           st.lists(st.text(alphabet="0123456789AZ", max_size=4), max_size=3))))
def test_emulators_answer_any_command_line_without_an_exception(line):
    dm, ky = DataManEmu(), KeyenceEmu()  # not started: replies are returned (DataMan) or sent nowhere
    try:
        dm.params["COM.DMCC-RESPONSE"] = "1"
        reply = dm.handle(line)
        assert reply is None or (reply.startswith("||") and reply.endswith("\r") and "[" in reply)
        assert ky.handle(line) is None
    finally:
        dm.close()
        ky.close()
