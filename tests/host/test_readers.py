"""The vendor reader drivers (host/devices/dataman.py, keyence.py, textreader.py) against their
emulators (host/sim/dataman_emu.py, keyence_emu.py) over real loopback TCP: configuration on
connect and its refusals, reads / no-reads / grades / symbology, garbage as alarms, a dropped
connection and the reconnect, and the agent judging units read through a DataMan."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from serialine.host.agent import Agent
from serialine.host.devices import registry
from serialine.host.devices.camera import Camera, CameraResult
from serialine.host.devices.coder import Coder
from serialine.host.devices.lineclient import DeviceError
from serialine.host.devices.textreader import TextReader
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.host.sim.dataman_emu import DataManEmu
from serialine.host.sim.keyence_emu import KeyenceEmu
from serialine.protocol.schema import Reason, Verdict

from test_agent_devices import ScriptedLink, run_unit  # noqa: E402

CODE = "0109506000134352172811301012345\x1d21ABCDEF123456"
EMULATORS = {"dataman": DataManEmu, "keyence-sr": KeyenceEmu}


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)
    return got


class Collect:
    """Takes a reader's results and alarms until a condition holds."""

    def __init__(self, reader):
        self.reader, self.results, self.alarms = reader, [], []

    def take(self):
        r, a = self.reader.results()
        self.results += r
        self.alarms += a
        return self

    def until(self, cond, timeout=5.0):
        wait_for(lambda: cond(self.take()), timeout)
        return self

    def kinds(self):
        return [k for k, _ in self.alarms]


def read(emu, printed, smeared=False):
    assert emu.connected.wait(5)  # a result sent before the reader connected is lost
    emu.trigger(0, printed, smeared)
    emu.deliver(10 ** 12)


# --- reads, no-reads, grades, symbology --------------------------------------------------------

@pytest.mark.parametrize("name", ["dataman", "keyence-sr"])
def test_reads_no_reads_and_grades(name):
    with EMULATORS[name](latency_ms=0, jitter_ms=0, low_grade=0.0) as emu:
        reader = registry.open_reader(name, *emu.address, {})
        read(emu, CODE)
        read(emu, None)  # nothing printed: a no-read
        emu.rates = (("low_grade", 1.0),)
        read(emu, CODE)
        got = Collect(reader).until(lambda c: len(c.results) == 3)
        assert [(r.n, r.grade, r.data) for r in got.results] == [
            (1, "A", "]d2" + CODE), (2, None, None), (3, "D", "]d2" + CODE)]
        assert got.alarms == []
        reader.close()


def test_dataman_configures_on_connect_with_command_ids():
    with DataManEmu() as emu:
        reader = registry.open_reader("dataman", *emu.address, {})
        assert emu.commands == ["||0:1>SET COM.DMCC-RESPONSE 1", "||0:2>GET COM.DMCC-RESPONSE",
                                "||0:3>SET SYMBOL.DATAMATRIX ON", "||0:4>GET SYMBOL.DATAMATRIX",
                                "||0:5>GET DEVICE.TYPE"]
        assert reader.device_type == "DataMan 475V" and emu.params["COM.DMCC-RESPONSE"] == "1"
        reader.close()


def test_dataman_read_string_as_status_1_is_a_result():
    with DataManEmu() as emu:
        reader = registry.open_reader("dataman", *emu.address, {})
        emu.send("||[1]B,]d2" + CODE + "\r")  # a reader-initiated read string (extended mode)
        emu.send("||[1]NOREAD\r")
        got = Collect(reader).until(lambda c: len(c.results) == 2)
        assert [(r.n, r.grade, r.data) for r in got.results] == [(1, "B", "]d2" + CODE), (2, None, None)]
        reader.close()


def test_text_driver_with_reader_numbers_and_the_serialine_format():
    """The text driver reads any line format: here the Serialine camera's, numbered by the reader."""
    opts = {"result": r"READ (?P<n>\d+) (?P<grade>\S+) (?P<data>\S+)", "no_read": r"NOREAD (?P<n>\d+)"}
    with SimCamera(latency_ms=0, jitter_ms=0, missed_trigger=0.0) as emu:
        reader = registry.open_reader("text", *emu.address, opts)
        assert isinstance(reader, TextReader)
        emu.triggers = 41  # the reader's own count: the driver takes it as it is
        read(emu, CODE)
        read(emu, None)
        got = Collect(reader).until(lambda c: len(c.results) == 2)
        assert got.results[0] == CameraResult(42, "A", "]d2" + CODE, got.results[0].t)
        assert (got.results[1].n, got.results[1].data) == (43, None)
        reader.close()


def test_text_driver_symbology_group_and_driver_count():
    opts = {"result": r"(?P<symbology>\]\w\d)\|(?P<data>[^|]+)\|(?P<grade>[0-4]\.\d)", "no_read": "NR"}
    with SimCamera() as emu:
        reader = registry.open_reader("text", *emu.address, opts)
        emu.connected.wait(5)
        for line in ["]d2|" + CODE + "|3.5", "NR", "]Q3|HELLO|4.0"]:
            emu.send(line)
        got = Collect(reader).until(lambda c: len(c.results) == 3)
        assert [(r.n, r.grade, r.data) for r in got.results] == [
            (1, "3.5", "]d2" + CODE), (2, None, None), (3, "4.0", "]Q3HELLO")]
        reader.close()


def test_serialine_entry_is_todays_camera():
    with SimCamera() as emu:
        cam = registry.open_reader("serialine", *emu.address, {"timeout": 1})
        assert type(cam) is Camera and cam.timeout == 1.0
        cam.close()


# --- garbage is an alarm, never kept, never a crash ----------------------------------------------

@pytest.mark.parametrize("name", ["dataman", "keyence-sr"])
def test_malformed_and_oversized_lines_are_alarms_and_count_as_triggers(name):
    with EMULATORS[name](latency_ms=0, jitter_ms=0) as emu:
        reader = registry.open_reader(name, *emu.address, {})
        emu.connected.wait(5)
        emu.send("HELLO world")  # neither result nor no-read
        emu.send("x" * 2000)  # over-long: discarded up to its end
        emu.send("\x01\x02binary")  # not printable
        emu.send("Z,]d2" + CODE if name == "dataman" else "]d2" + CODE + ":Z")  # a bad grade
        emu.send(("A," if name == "dataman" else "") + "NODATA" + ("" if name == "dataman" else ":A"))  # no ]Cm
        read(emu, CODE)
        got = Collect(reader).until(lambda c: c.results)
        assert [(r.n, r.data) for r in got.results] == [(6, "]d2" + CODE)]  # five lines lost: five triggers
        got.until(lambda c: len(c.alarms) >= 5)
        assert sorted(got.kinds()) == ["MALFORMED"] * 4 + ["TOO_LONG"]
        assert all(len(d) < 300 for _, d in got.alarms)
        reader.close()


def test_stray_and_late_replies_are_alarms_not_answers():
    with DataManEmu() as emu:
        reader = registry.open_reader("dataman", *emu.address, {})
        emu.connected.wait(5)
        emu.send("||0:99[0]late\r")  # an id nobody waits for
        emu.send("||garbage\r")  # not a DMCC reply
        got = Collect(reader).until(lambda c: len(c.alarms) >= 2)
        assert sorted(got.kinds()) == ["MALFORMED", "UNEXPECTED_REPLY"]
        assert reader.get("SYMBOL.DATAMATRIX") == "ON"  # the next command still gets its own reply
        reader.close()
    with KeyenceEmu() as emu:
        reader = registry.open_reader("keyence-sr", *emu.address, {})
        emu.connected.wait(5)
        emu.send("OK,LON")  # a reply to nothing
        got = Collect(reader).until(lambda c: c.alarms)
        assert got.kinds() == ["UNEXPECTED_REPLY"] and got.results == []
        assert reader.command("RP,100") == "1"
        reader.close()


def test_emulator_garbage_fault_through_the_drivers():
    for name, emu_cls in EMULATORS.items():
        with emu_cls(latency_ms=0, jitter_ms=0, garbage=1.0, seed=3) as emu:
            reader = registry.open_reader(name, *emu.address, {})
            for _ in range(20):
                read(emu, CODE)
            got = Collect(reader).until(lambda c: len(c.results) == 20 and c.alarms)  # alarms: bounded a second
            assert [(r.n, r.data) for r in got.results] == [(i, "]d2" + CODE) for i in range(1, 21)]  # not counted
            assert set(got.kinds()) <= {"MALFORMED", "UNEXPECTED_REPLY"}
            reader.close()


# --- configuration refused: one line, nothing kept open ------------------------------------------

def test_dataman_refusals_name_the_command_and_status():
    with DataManEmu() as emu:
        emu.set_param("SYMBOL.DATAMATRIX", "OFF", read_only=True)
        with pytest.raises(DeviceError) as exc:
            registry.open_reader("dataman", *emu.address, {})
        msg = str(exc.value)
        assert msg == (f"dataman at {emu.address[0]}:{emu.address[1]}: refused 'SET SYMBOL.DATAMATRIX ON': "
                       "[102] parameter invalid") and "\n" not in msg
        with pytest.raises(DeviceError, match=r"SYMBOL.DATAMATRIX is 'OFF', the driver needs 'ON'"):
            registry.open_reader("dataman", *emu.address, {"setup": []})
        with pytest.raises(DeviceError, match=r"refused 'FROB': \[101\] command invalid"):
            registry.open_reader("dataman", *emu.address, {"setup": ["FROB"], "expect": {}})


@pytest.mark.parametrize("name,message", [
    ("dataman", r"no reply to 'GET COM.DMCC-RESPONSE' within 0.3s \(is this a DataMan's DMCC port\?\)"),
    ("keyence-sr", r"no reply to KEYENCE within 0.3s \(is this an SR reader's command port\?\)")])
def test_a_port_that_never_answers_is_refused_within_the_timeout(name, message):
    server = socket.create_server(("127.0.0.1", 0))
    conns = []
    threading.Thread(target=lambda: conns.append(server.accept()), daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=message):
        registry.open_reader(name, *server.getsockname()[:2], {"timeout": 0.3})
    assert time.monotonic() - t0 < 2
    server.close()


def test_keyence_setup_refusal():
    with KeyenceEmu() as emu:
        reader = registry.open_reader("keyence-sr", *emu.address, {"setup": ["WP,100,3"]})
        assert emu.params["100"] == "3"
        reader.close()
        assert emu.commands == ["KEYENCE", "WP,100,3"] and reader.model == "SR-X300"
        with pytest.raises(DeviceError, match=r"^keyence-sr at .*: refused 'WP,999,3': ER,WP,02 \(parameter 1 out of range\)$"):
            registry.open_reader("keyence-sr", *emu.address, {"setup": ["WP,999,3"]})
        with pytest.raises(DeviceError, match=r"refused 'XYZ': ER,XYZ,00 \(undefined command\)"):
            registry.open_reader("keyence-sr", *emu.address, {"setup": ["XYZ"]})


def test_emulator_error_replies_on_the_wire():
    def talk(address, *lines):
        with socket.create_connection(address, timeout=2) as s:
            out = b""
            for line in lines:
                s.sendall(line)
            s.settimeout(0.3)
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    out += chunk
            except socket.timeout:
                pass
            return out

    with DataManEmu() as emu:
        assert talk(emu.address, b"||>GET DEVICE.TYPE\r\n") == b""  # silent by default
        emu.params["COM.DMCC-RESPONSE"] = "1"
        assert talk(emu.address, b"||>FROB\r\n", b"||0:7>GET NO.SUCH\r\n", b"||1:8>GET DEVICE.TYPE?\r\n",
                    b"GET DEVICE.TYPE\r\n", b"||0:9>get device.type\r\n") == (
            b"||[101]\r\n||0:7[102]\r\n||1:8[103]\r\n||0:9[0]DataMan 475V\r\n")
    with KeyenceEmu() as emu:
        assert talk(emu.address, b"LON\r\n", b"LON\r\n", b"LOFF\r\n", b"WP,1\r\n", b"NOPE\r\n") == (
            b"OK,LON\rER,LON,20\rOK,LOFF\rERROR\rER,WP,01\rER,NOPE,00\r")


@pytest.mark.parametrize("name,options,message", [
    ("text", {"result": "(?P<grade>x", "no_read": "N"}, "option 'result' = '(?P<grade>x' is not a regular expression"),
    ("text", {"result": "(?P<data>.*)", "no_read": "N"}, "option 'result': needs the group (?P<grade>…)"),
    ("text", {"result": "(?P<grade>.)(?P<data>.*)"}, "options 'result' and 'no_read' (regular expressions) are required"),
    ("text", {"result": "(?P<grade>.)(?P<data>.*)", "no_read": "N", "trigger_count": "reader"},
     "option 'trigger_count' = 'reader' needs a group (?P<n>…)"),
    ("text", {"result": "(?P<grade>.)(?P<data>.*)", "no_read": "N", "trigger_count": "camera"},
     "option 'trigger_count' = 'camera': expected 'reader' or 'driver'"),
    ("dataman", {"setup": ["||>SET X"]}, "option 'setup': '||>SET X' is not one DMCC command"),
    ("dataman", {"expect": {"bad name": "1"}}, "option 'expect'"),
    ("dataman", {"timeout": 0}, "option 'timeout' = 0: expected 0.1 to 30 (s)"),
    ("dataman", {"color": "red"}, "unknown option 'color'"),
    ("keyence-sr", {"setup": ["LON"]}, "LON/LOFF would trigger a read"),
    ("keyence-sr", {"no_read": "(?P<grade>E)"}, "option 'no_read': unknown group 'grade'"),
    ("nosuch", {}, "reader driver 'nosuch': expected one of dataman, keyence-sr, serialine, text"),
])
def test_check_options_refuses_with_one_line(name, options, message):
    with pytest.raises(ValueError) as exc:
        registry.check_options("reader", name, options)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_check_options_accepts_the_defaults():
    for name in ("serialine", "dataman", "keyence-sr"):
        registry.check_options("reader", name, {})
    registry.check_options("coder", "serialine", {})


# --- a dropped connection: closed, alarmed, reopened and reconfigured ----------------------------

@pytest.mark.parametrize("name", ["dataman", "keyence-sr"])
def test_dropped_connection_and_reconnect(name):
    with EMULATORS[name](latency_ms=0, jitter_ms=0) as emu:
        reader = registry.open_reader(name, *emu.address, {"setup": ["WP,100,2"]} if name == "keyence-sr" else {})
        read(emu, CODE)
        got = Collect(reader).until(lambda c: c.results)
        sent = len(emu.commands)
        emu.drop()
        wait_for(lambda: reader.closed)
        got.until(lambda c: "DISCONNECTED" in c.kinds() and not reader.closed)  # results() reopened it
        assert "RESYNC" in got.kinds()
        assert len(emu.commands) > sent  # configured again on the new connection
        read(emu, CODE)
        got.until(lambda c: len(c.results) == 2)
        assert [r.n for r in got.results] == [1, 2]
        reader.reconnect("operator asked")  # an explicit reconnect works as well
        read(emu, None)
        got.until(lambda c: len(c.results) == 3)
        assert got.results[-1].data is None
        reader.close()
        with pytest.raises(DeviceError):
            reader.reconnect("after close")


def test_reconfiguration_refused_on_reconnect_is_an_alarm_and_retried():
    with DataManEmu(latency_ms=0, jitter_ms=0) as emu:
        reader = registry.open_reader("dataman", *emu.address, {})
        got = Collect(reader)
        emu.set_param("SYMBOL.DATAMATRIX", "OFF", read_only=True)  # someone changed the reader
        emu.drop()
        got.until(lambda c: any("refused 'SET SYMBOL.DATAMATRIX ON'" in d for _, d in c.alarms))
        assert reader.closed and not reader.shut  # not used as it is, and tried again later
        emu.allowed["SYMBOL.DATAMATRIX"] = {"ON", "OFF"}
        got.until(lambda c: not reader.closed, timeout=5)
        read(emu, CODE)
        got.until(lambda c: c.results)
        reader.close()


# --- the agent judges units read through a DataMan -------------------------------------------------

def test_agent_with_dataman_reader(conn):
    with SimCoder() as sc, DataManEmu(latency_ms=0, jitter_ms=0) as emu:
        link = ScriptedLink()
        camera = registry.open_reader("dataman", *emu.address, {})
        agent = Agent(conn, "B1", link, Coder(*sc.address), camera, fill_ahead=5, window_s=0.3)
        agent.start()
        assert [run_unit(agent, link, sc, emu, u) for u in range(3)] == [(Verdict.PASS, Reason.OK)] * 3
        assert run_unit(agent, link, sc, emu, 3, fault="misread")[0] == Verdict.FAIL
        assert run_unit(agent, link, sc, emu, 4) == (Verdict.PASS, Reason.OK)
        camera.close()
