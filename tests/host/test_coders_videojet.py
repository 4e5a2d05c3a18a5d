"""The Videojet (Zipher) Text Communications Protocol driver against its emulator over loopback TCP
(the DataFlex 6530 manual's appendix B, docs/devices.md): the emulator answers as the manual says,
the driver loads one job at a time and learns of prints from the counts, refusals are definite,
a reply that never comes is in doubt, a dropped connection loses no print; the reply parser is fuzzed."""

import contextlib
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serialine.host.devices import registry, videojet
from serialine.host.devices.lineclient import DeviceError, InDoubt
from serialine.host.devices.videojet import ReplyError, Status, VideojetCoder, parse_reply
from serialine.host.sim.videojet_emu import OFFLINE, RUNNING, VideojetEmu

CODE = "0109506000134352\x1d21SER{}"


def _wait(pred, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def _talk(emu, *lines) -> list[str]:
    """Raw CR-terminated lines to the emulator, its reply lines back."""
    with socket.create_connection(emu.address, timeout=2) as s:
        f = s.makefile("rb")
        out = []
        for line in lines:
            s.sendall(line.encode("ascii") + b"\r")
            reply = b""
            while not reply.endswith(b"\r"):
                reply += f.read(1)
            out.append(reply[:-1].decode())
        return out


def test_the_emulator_answers_as_the_manual_says():
    with VideojetEmu(selected="", jobs={"SERIALINE": ("SERIAL",), "Default 4 Line Text": ("Line 1", "Line 4")}) as emu:
        assert _talk(emu, "GST", "JDA|SERIAL=X|", "SST|3|") == ["STS|4|0||0|0|", "ERR", "ERR"]  # no job selected
        assert _talk(emu, "SLA|Default 4 Line Text|Line 1=First Line|Line 4=Fourth Line|", "SST|0|", "SST|3|",
                     "GST") == ["ACK", "ERR", "ACK", "STS|3|0|Default 4 Line Text|0|0|"]
        assert emu.fields == {"Line 1": "First Line", "Line 4": "Fourth Line"}
        assert _talk(emu, "JDA|Nope=ignored|", "JDU|a|b|", "PRN", "GST") == ["ACK", "ACK", "ACK", "STS|3|0|Default 4 Line Text|1|1|"]
        assert emu.fields == {"Line 1": "a", "Line 4": "b"}  # an unknown field name is ignored, not an error
        assert _talk(emu, "XYZ", "GST|", "JDA|noequals|", "SLA|Unknown job|") == ["ERR"] * 4
        emu.fault(clearable=False)
        assert _talk(emu, "GST", "PRN", "CAF", "SST|3|") == ["STS|4|2|Default 4 Line Text|1|1|", "ERR", "ERR", "ERR"]
        assert emu.trigger(0) is None and emu.total_count == 1  # offline: nothing printed, no count
        assert _talk(emu, "x" * 600) == ["ERR"]  # an over-long line: one failure reply, still in step


def test_push_loads_one_job_and_each_counted_print_reports_it_in_order():
    with VideojetEmu() as emu:
        c = VideojetCoder(*emu.address, poll_s=0.005)
        try:
            codes = [CODE.format(i) for i in range(4)]
            assert [c.push(x) for x in codes] == [1, 2, 3, 4]
            assert emu.fields["SERIAL"] == codes[0] and c.buffered() == 4
            printed = []
            for i in range(4):
                assert emu.trigger(i) == (codes[i], "")  # the poller loads the next one in time
                assert _wait(lambda: c.buffered() == 3 - i and emu.depth == (1 if i < 3 else 0))
                printed += c.printed_codes()
            assert [code for _, code in printed] == codes and c.printed == 4 and c.empty == 0
            assert emu.commands[:3] == ["GST", "JDA|SERIAL=|", "GST"]  # the driver starts with an empty field
            assert [x for x in emu.commands if x.startswith("JDA")][1:] == [f"JDA|SERIAL={x}|" for x in codes]
        finally:
            c.close()


def test_a_print_with_nothing_fresh_loaded_counts_as_empty_and_clear_empties_the_field():
    with VideojetEmu() as emu:
        c = VideojetCoder(*emu.address, poll_s=0.005)
        try:
            c.push(CODE.format(1))
            emu.trigger(0)
            assert emu.trigger(1) == (CODE.format(1), "duplicate")  # the same data again
            assert _wait(lambda: c.empty == 1) and [x for _, x in c.printed_codes()] == [CODE.format(1)]
            c.push(CODE.format(2))
            c.push(CODE.format(3))
            epoch = c.epoch
            c.clear()
            assert emu.fields["SERIAL"] == "" and c.depth() == 0 and c.epoch > epoch
            assert emu.trigger(2) is None and _wait(lambda: c.empty == 2)  # an empty field: no job printed
        finally:
            c.close()


def test_refusals_are_definite_and_a_missing_reply_is_in_doubt():
    with VideojetEmu(selected="") as emu:  # no job selected: the manual's most likely JDA failure
        with pytest.raises(DeviceError, match="ERR"):
            VideojetCoder(*emu.address, job="NOT THERE")
        c = VideojetCoder(*emu.address, timeout=0.3, poll_s=60, job="SERIALINE")  # polled by depth() only
        try:
            assert emu.job == "SERIALINE" and emu.state == OFFLINE
            c.run()  # SST|3|: online now that a job is selected
            assert emu.state == RUNNING
            emu.job = ""  # someone deselected it at the printer
            with pytest.raises(DeviceError, match="refused PUSH") as refused:
                c.push(CODE.format(1))
            assert not isinstance(refused.value, InDoubt) and c.buffered() == 0  # nothing queued
            with pytest.raises(DeviceError, match="cannot carry"):
                c.push("A|B")
            emu.job = "SERIALINE"
            emu.reply_delay_s = [0, 0.6]  # the count before the load comes; the JDA's ACK after the driver gave up
            with pytest.raises(InDoubt):
                c.push(CODE.format(2))
            assert _wait(lambda: emu.fields.get("SERIAL") == CODE.format(2))  # it did load
            emu.trigger(0)
            assert c.depth() == 0 and c.printed == 1
            assert [x for _, x in c.printed_codes()] == [None]  # which code: unknown
            assert "PRINT_IN_DOUBT" in {k for k, _ in c.alarms()}
            assert c.push(CODE.format(3)) == 1  # the doubt went with that print
        finally:
            c.close()


def test_a_dropped_connection_loses_no_print_and_the_next_request_reconnects():
    with VideojetEmu() as emu:
        c = VideojetCoder(*emu.address, poll_s=0.005)
        try:
            c.push(CODE.format(1))
            c.push(CODE.format(2))
            emu.drop()
            emu.trigger(0)  # printed while the host was away: the total count keeps it
            assert _wait(lambda: c.closed) and c.printed == 0  # the poller does not reconnect behind the owner
            assert c.buffered() == 1 and c.printed == 1  # the owner's next request reconnects and counts it
            assert [x for _, x in c.printed_codes()] == [CODE.format(1)]
            assert _wait(lambda: emu.fields["SERIAL"] == CODE.format(2), timeout=5) and not c.closed
            kinds = {k for k, _ in c.alarms()}
            assert {"DISCONNECTED", "RESYNC"} <= kinds
        finally:
            c.close()


def test_stray_replies_never_shift_what_is_reported_printed():
    """An unsolicited ACK after every print (answering no request): the driver reconnects before its
    next request and every print is still reported, in order."""
    with VideojetEmu(stray_reply=1.0) as emu:
        c = VideojetCoder(*emu.address, poll_s=0.005)
        try:
            codes = [CODE.format(i) for i in range(5)]
            for x in codes:
                c.push(x)
            for i in range(5):
                assert _wait(lambda: emu.loaded)  # loaded, and the driver's window after the load closed
                emu.trigger(i)
                assert _wait(lambda: c.printed == i + 1)
            assert [x for _, x in c.printed_codes()] == codes and c.empty == 0
            assert emu.faults["stray_reply"] == 5 and "UNEXPECTED_REPLY" in {k for k, _ in c.alarms()}
        finally:
            c.close()


def test_printer_state_and_faults_are_alarms():
    with VideojetEmu() as emu:
        c = VideojetCoder(*emu.address, poll_s=0.005)
        try:
            emu.fault(clearable=True)
            assert _wait(lambda: c.status is not None and c.status.state == OFFLINE)
            assert "NOT_RUNNING" in {k for k, _ in c.alarms()}
            c.clear_faults()
            c.run()
            assert _wait(lambda: c.status.state == RUNNING and c.status.error == 0)
        finally:
            c.close()


def test_the_registry_opens_it_and_refuses_bad_options():
    registry.check_options("coder", "videojet", {"field": "SERIAL", "poll_ms": 5})
    for bad, word in (({"field": "A|B"}, "field"), ({"poll_ms": 0}, "poll_ms"), ({"colour": 1}, "colour"),
                      ({"queue": True}, "queue")):
        with pytest.raises(ValueError, match=word):
            registry.check_options("coder", "videojet", bad)
    with VideojetEmu() as emu:
        c = registry.open_coder("videojet", *emu.address, {"poll_ms": 5})
        try:
            assert isinstance(c, VideojetCoder) and c.push(CODE.format(1)) == 1
        finally:
            c.close()


def test_parse_reply_examples_from_the_manual():
    assert parse_reply("STS|3|0|Default 4 Line Text|4345|8253|") == Status(3, 0, "Default 4 Line Text", 4345, 8253)
    assert parse_reply("STS|4|2||0|8253|") == Status(4, 2, "", 0, 8253)
    assert parse_reply("ACK") == "ACK" and parse_reply("ERR") == "ERR"
    for bad in ("STS|5|0|x|1|2|", "STS|3|0|x|1|2", "ACK ", "STS|3|0|a|b|1|2|", ""):
        with pytest.raises(ReplyError):
            parse_reply(bad)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7f), max_size=80))
def test_parse_reply_never_crashes(line):
    try:
        r = parse_reply(line)
    except ReplyError:
        return
    assert r in ("ACK", "ERR") or (isinstance(r, Status) and 0 <= r.state <= 4 and 0 <= r.error <= 2)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4), st.integers(0, 2), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126,
                                                                          blacklist_characters="|"), max_size=30),
       st.integers(0, 10**10 - 1), st.integers(0, 10**10 - 1))
def test_parse_reply_round_trips_a_status(state, error, job, batch, total):
    assert parse_reply(f"STS|{state}|{error}|{job}|{batch}|{total}|") == Status(state, error, job, batch, total)


# --- prints inside the load window, driven from the test at fixed points of the protocol ------------
class Booking(VideojetCoder):
    """The driver under test, recording how it booked each print, in order ("" = no job)."""

    def __init__(self, *a, **kw):
        self.bookings: list[str | None] = []
        super().__init__(*a, **kw)

    def _book(self, code):
        self.bookings.append("" if code is videojet.EMPTY else code)
        super()._book(code)


def _check_bookings(emu, c):
    """Every counted print booked once; each booking is what the printer printed, or None (in doubt:
    the cross-check fails its unit and stops the line); no job printed twice."""
    assert len(c.bookings) == len(emu.log), (c.bookings, emu.log)
    for printed, booked in zip(emu.log, c.bookings):
        assert booked is None or booked == (printed or ""), (c.bookings, emu.log)
    fresh = [x for x in emu.log if x]
    assert len(fresh) == len(set(fresh))


@contextlib.contextmanager
def _booking(**kw):
    """An emulator and a recording driver without a poller: the test says when the driver looks."""
    with VideojetEmu() as emu:
        c = Booking(*emu.address, poll_s=60, **kw)
        try:
            yield emu, c
        finally:
            c.close()


def test_a_print_just_before_a_push_is_no_job_and_the_pushed_job_is_booked_exactly():
    """Once failed: the push's JDA went out without asking the count first, so the old data's print
    was booked in doubt and the pushed job's own print then as no job."""
    with _booking() as (emu, c):
        c.push(CODE.format(0))
        emu.trigger(0)
        c.depth()
        emu.trigger(1)  # the same data again: no job on this pack
        c.push(CODE.format(1))
        emu.trigger(2)
        c.depth()
        assert c.bookings == [CODE.format(0), "", CODE.format(1)] and emu.log == [CODE.format(0), None, CODE.format(1)]
        assert "PRINT_IN_DOUBT" not in {k for k, _ in c.alarms()}


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_print_inside_the_load_window_and_the_next_one_are_in_doubt(when):
    """A print while the JDA is on its way ("before": the old data; "after": the new data, its ACK
    not out yet) is in doubt, and so is the next one (the loaded job may still wait in the field:
    once failed, booked as no job although it printed that job); after that one the job is gone
    (no job), and a confirmed load is known again."""
    with _booking() as (emu, c):
        c.push(CODE.format(0))
        emu.trigger(0)
        c.depth()
        emu.prints_at.append(("JDA", when))
        c.push(CODE.format(1))
        assert c.buffered() == 0  # not known to wait in the field
        emu.trigger(1)
        emu.trigger(2)
        c.push(CODE.format(2))  # loaded, and the count after it has not moved: known again
        emu.trigger(3)
        c.depth()
        assert emu.log[1:] == ([None, CODE.format(1), None, CODE.format(2)] if when == "before"
                               else [CODE.format(1), None, None, CODE.format(2)])
        assert c.bookings == [CODE.format(0), None, None, "", CODE.format(2)]
        _check_bookings(emu, c)
        assert "PRINT_IN_DOUBT" in {k for k, _ in c.alarms()}


def test_a_load_whose_count_after_never_comes_is_in_doubt():
    """Once failed: the count after the ACK timed out, the job was taken as loaded and known, so the
    print of the old data made meanwhile was booked as that job (and the job's own print as none)."""
    with _booking(timeout=0.3) as (emu, c):
        c.push(CODE.format(0))
        emu.trigger(0)
        c.depth()
        emu.prints_at.append(("JDA", "before"))
        emu.reply_delay_s = [0, 0, 0.6, 0.6]  # GST, JDA answered; the GST after it (and its retry) late
        with pytest.raises(InDoubt):
            c.push(CODE.format(1))
        emu.trigger(1)  # the job that waited in the field
        assert _wait(lambda: not emu.reply_delay_s)
        c.depth()
        c.depth()
        assert emu.log == [CODE.format(0), None, CODE.format(1)] and c.bookings == [CODE.format(0), None, None]


def test_a_refused_load_leaves_the_field_as_it_was():
    with _booking() as (emu, c):
        c.push(CODE.format(0))
        c.push(CODE.format(1))
        emu.trigger(0)
        job, emu.job = emu.job, ""  # deselected at the printer: the next load answers ERR
        assert c.depth() == 1 and "LOAD_REFUSED" in {k for k, _ in c.alarms()}
        emu.trigger(1)  # the old data again: no job on this pack
        emu.job = job
        c._load_at = 0.0  # the retry is due
        assert c.depth() == 1 and emu.fields["SERIAL"] == CODE.format(1)
        emu.trigger(2)
        assert c.depth() == 0 and c.bookings == [CODE.format(0), "", CODE.format(1)]
        _check_bookings(emu, c)


_STEP = st.sampled_from(["push", "push", "poll", "print", "print", ("JDA", "before"), ("JDA", "after"),
                         ("GST", "before"), ("GST", "after")])


@settings(max_examples=60, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=40))
def test_at_any_print_rate_every_print_is_booked_as_printed_or_in_doubt(steps):
    """Prints as fast as the test likes: between any two driver calls, and inside any command (before
    it is carried out, or after it with the reply not out yet), so inside every kind of load window."""
    with _booking() as (emu, c):
        n = 0
        for step in steps:
            if step == "push":
                if c.buffered() < c.max_queue:
                    c.push(CODE.format(n))
                    n += 1
            elif step == "poll":
                c.depth()
            elif step == "print":
                emu.trigger(0)
            else:
                emu.prints_at.append(step)
        emu.prints_at.clear()
        c.depth()
        _check_bookings(emu, c)
        booked = [x for x in c.bookings if x]
        assert booked == sorted(booked, key=lambda x: int(x.rsplit("SER", 1)[1]))  # in push order
