"""`serialine agent run`: the host agent as a long-running service for one line (docs/agent.md).

From a line file (host/linefile.py) it opens the ledger, the link to the line device, the coder and
the camera, and the control interface, then runs host/agent.py's Agent on one batch (`--batch`, or
the one selected through the control interface; it never creates batches). It follows the device
itself: on every new boot it sends the line file's configuration and reads the CONFIG_REPORT (a
refusal ends the service with the field and value in the line file's units) and, with `[agent]
start_on_boot`, starts the line. A coder or camera connection that drops latches a line stop with
an alarm; it is reopened with backoff, and once back the agent re-pairs (camera) or resets the
coder's queue (coder); the line restarts only on an operator's clear/start. The outbox is forwarded
to the line file's upstream targets by one thread per target, each on its own connection.

SIGTERM stops the line, lets the units in flight reach their outcome (a few seconds at most),
stores and acks everything and exits 0; a second SIGTERM (or SIGINT) exits at once: the crash path
that resume handles. Logs go to stderr, one line per event that matters."""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

import serial  # type: ignore[import-untyped]

from serialine.protocol.schema import FINGERPRINT, NO_UNIT, Alarm, Command, ConfigResult, DeviceState

from . import audit, devevents
from .db import transaction

log = logging.getLogger("serialine.service")

USER = "serialine-agent"  # who the service's own audit records are by
RECONNECT_FIRST_S, RECONNECT_MAX_S = 1.0, 30.0
DRAIN_S = 10.0  # after SIGTERM: how long the units in flight get to reach their outcome (systemd: 30 s)
STILL_S = 3.0  # after SIGTERM: the belt still and no outcome stored this long: the units left will not get one
CONNECT_S = 1.0  # one HELLO attempt; the service keeps trying, serving its control interface
PUBLISH_EVERY_S = 0.005  # the status snapshot (a JSON dump, ~40 µs): at most this often, not every step
ALARMS_EVERY_S = 0.2  # new alarms (ledger and device) logged and put in the status this often
STATUS_EVERY_S = 1.0  # ledger figures and alarms in the status snapshot (the rest is fresh every step)
CONFIG_REPORT_WARN_S = 10.0
CONFIG_RETRY_S = 1.0  # a device busy with units in flight is sent the configuration again after this


class ServiceError(Exception):
    """The service cannot go on (one line; exit 1)."""


class Stop(Exception):
    """SIGTERM/SIGINT: leave in order."""


# --- logging -----------------------------------------------------------------------------------

def setup_logging(with_time: bool | None = None, level: int = logging.INFO) -> None:
    """stderr, journal-friendly: `serialine-agent: LEVEL message` (time only on a terminal or asked)."""
    if with_time is None:
        with_time = sys.stderr.isatty()
    fmt = ("%(asctime)s " if with_time else "") + "serialine-agent: %(levelname)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger("serialine")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def sentence(exc: BaseException) -> str:
    from .ledgerfile import sentence as ledger_sentence
    return ledger_sentence(exc)


# --- drivers, watched --------------------------------------------------------------------------

def _split(address: str) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ServiceError(f"address {address!r}: expected HOST:PORT")
    return host, int(port)


def open_driver(kind: str, name: str, address: str, options: dict):
    """A reader or coder driver by its line-file name (host/devices/registry.py)."""
    from .devices import registry
    host, port = _split(address)
    opener = registry.open_reader if kind == "camera" else registry.open_coder
    return opener(name, host, port, dict(options or {}))


class Watched:
    """A driver as the agent sees it while the service watches its connection. While it is lost
    nothing reaches the device (requests raise DeviceError at once, no results are taken): only the
    service reconnects it, with backoff, so the agent never races a reconnect."""

    def __init__(self, kind: str, address: str, driver):
        self.kind, self.address, self.driver = kind, address, driver
        self.lost = False
        self._attempt: threading.Thread | None = None
        self._retry_at = 0.0
        self._wait = 0.0
        self._back = False  # reconnected by the attempt thread, not yet reported
        self._last_error = ""
        self._resync_said = False
        self._dropped = False

    def __getattr__(self, name):  # empty, printed, alarms, printed_codes, ...
        return getattr(self.driver, name)

    @property
    def closed(self) -> bool:
        return self.lost or self.driver.closed

    def _guard(self):
        from .devices.lineclient import DeviceError
        if self.lost or self.driver.closed:  # check() reports the loss and reconnects
            raise DeviceError(f"{self.kind} at {self.address}: connection lost")

    # the coder's requests
    def push(self, code):
        self._guard()
        return self.driver.push(code)

    def clear(self):
        self._guard()
        return self.driver.clear()

    def depth(self):
        self._guard()
        return self.driver.depth()

    def buffered(self):
        self._guard()
        return self.driver.buffered()

    # the reader's results
    def results(self):
        if self.lost or self.driver.closed:
            return [], self.alarms()
        results, alarms = self.driver.results()
        return results, self._once(alarms)

    def alarms(self):
        take = getattr(self.driver, "alarms", None)
        return self._once(take() if take else [])

    def _once(self, alarms):
        """While lost, one reconnect alarm per episode: the further attempts are its backoff. A
        DISCONNECTED seen while connected is a loss even if the driver reopened by itself meanwhile."""
        if not self.lost:
            if any(kind == "DISCONNECTED" for kind, _ in alarms):
                self._dropped = True
            return alarms
        out = []
        for kind, detail in alarms:
            if kind == "RESYNC":
                if self._resync_said:
                    continue
                self._resync_said = True
            out.append((kind, detail))
        return out

    def close(self):
        self.driver.close()

    # supervision (service loop)
    def check(self, now: float) -> str | None:
        """'lost' when the connection has just gone, 'back' when it has just come back, else None."""
        if self._back:
            self._back, self.lost, self._wait, self._resync_said = False, False, 0.0, False
            return "back"
        if not self.lost and (self.driver.closed or self._dropped):
            self.lost, self._dropped = True, False
            self._retry_at, self._wait = now + RECONNECT_FIRST_S, RECONNECT_FIRST_S
            return "lost"
        if self.lost and self._attempt is None and now >= self._retry_at \
                and not getattr(self.driver, "shut", False):
            self._attempt = threading.Thread(target=self._reconnect, daemon=True, name=f"reconnect-{self.kind}")
            self._attempt.start()
        return None

    def _reconnect(self) -> None:
        try:
            self.driver.reconnect("connection lost")
        except Exception as exc:  # DeviceError, OSError, a driver's handshake refused: a failed attempt
            self._last_error = str(exc)
            self._wait = min(RECONNECT_MAX_S, max(RECONNECT_FIRST_S, self._wait * 2))
            self._retry_at = time.monotonic() + self._wait
            log.debug("%s: reconnect failed (%s); next try in %g s", self.kind, exc, self._wait)
        else:
            self._back = True
        finally:
            self._attempt = None


# --- the forwarder threads ---------------------------------------------------------------------

def _sink(target):
    """A line file's [[upstream]] target → its sink; credentials from the environment (`env:NAME,…`:
    only those, each set) or the target's file, never from the line file itself. A refusal is one
    line naming the target and the variable, never a value."""
    from .epcis.cli import sink_from_spec
    cred = target.credentials
    names = tuple(cred[len("env:"):].split(",")) if cred.startswith("env:") else None
    try:
        return sink_from_spec(target.spec, credentials_file=target.credentials_file, ca_file=target.ca_file or None,
                              cert_file=target.cert_file or None, key_file=target.key_file or None, env_names=names)
    except ValueError as exc:
        where = _without_userinfo(target.where)
        raise ServiceError(f"[[upstream]] {target.kind} {where}: credentials = {cred!r}: {exc}" if names
                           else f"[[upstream]] {target.kind} {where}: {exc}") from None


def _without_userinfo(where: str) -> str:
    """An address fit for the log: a `user:secret@` in it (refused anyway) is not repeated."""
    import urllib.parse
    parts = urllib.parse.urlsplit(where)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl() if "@" in parts.netloc else where


class _SaidSink:
    """A sink whose failures are logged once per episode (the forwarder records each in the outbox)."""

    def __init__(self, sink, name: str):
        self.sink, self.name, self.failing = sink, name, False

    def send(self, document, name):
        from .epcis.sinks import SinkError
        try:
            self.sink.send(document, name)
        except SinkError as exc:
            if not self.failing:
                self.failing = True
                log.warning("upstream %s: %s; the events wait in the outbox, retried with backoff", self.name,
                            _first_line(exc))
            raise
        if self.failing:
            self.failing = False
            log.info("upstream %s: delivering again", self.name)

    def close(self):
        close = getattr(self.sink, "close", None)
        if close:
            close()


class Forwarding:
    """One thread per upstream target, each with its own SQLite connection (Forwarder.run)."""

    def __init__(self, db_path: str, targets):
        self.db_path, self.targets = db_path, list(targets or ())
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        from .epcis.forwarder import target_of
        for target in self.targets:
            sink = _sink(target)  # ServiceError: one line, redacted
            name = target_of(sink)
            log.info("forwarding the outbox to %s", name)
            t = threading.Thread(target=self._run, args=(sink,), daemon=True, name=f"forward {name}")
            t.start()
            self.threads.append(t)

    def _run(self, sink) -> None:
        from .epcis.forwarder import Forwarder, target_of
        from .ledgerfile import LedgerFileError
        try:  # a connection of this thread's own (SQLite connections stay in their thread)
            conn = _open_ledger(self.db_path, schema=False)
            conn.execute("PRAGMA busy_timeout = 2000")
            fwd = Forwarder(conn, _SaidSink(sink, target_of(sink)), target=target_of(sink))
        except (LedgerFileError, sqlite3.Error) as exc:
            log.error("forwarding stopped: %s", sentence(exc))
            return
        said = None
        while not self.stop.is_set():
            try:
                fwd.run(self.stop)
            except sqlite3.Error as exc:  # busy past its timeout, or worse: said once, tried again
                if str(exc) != said:
                    said = str(exc)
                    log.warning("forwarding to %s: %s; retrying", fwd.target, sentence(exc))
                self.stop.wait(1.0)
            except Exception as exc:  # a sink's unexpected failure must not end the service
                log.error("forwarding to %s stopped: %s: %s", fwd.target, type(exc).__name__, exc)
                return
        conn.close()

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)


def _open_ledger(path, schema: bool = True):
    from .ledgerfile import open_ledger
    return open_ledger(path, schema=schema)


# --- the service -------------------------------------------------------------------------------

class Service:
    def __init__(self, cfg, batch: str | None = None):
        self.cfg, self.batch_arg = cfg, batch
        self.conn: Any = None  # set by _open; None only before it
        self.link: Any = None
        self.coder: Any = None  # Watched
        self.camera: Any = None  # Watched
        self.agent: Any = None  # host/agent.py Agent, once a batch is selected
        self.control: Any = None
        self.opcua: Any = None  # host/opcua/server.py Background, with [opcua]
        self.console: Any = None  # host/console/serve.py Server, with [console]
        self.forwarding: Forwarding | None = None
        self.stopping = False
        self.boot_id: int | None = None  # the boot the service has handled (configured or resumed)
        self.configured = False
        self.config_id = 0
        self._config_sent_at = 0.0
        self._config_warned = False
        self._config_fields: dict = {}
        self._busy_said = False
        self._ready = False
        self._status_at = self._alarms_at = self._published_at = 0.0
        self._figures: dict = {}
        self._read_failing: set[str] = set()  # status reads failing now (said once)
        self._alarm_seen = 0
        self._alarms: list[dict] = []
        self._signals = 0
        self._link_up = True
        self._batch_changed = False
        self._device_alarm_at: tuple = (None, -1)  # ((device_id, boot_id), last ALARM event_seq logged)
        self.challenge: Any = None  # host/challenge.py Run, the latest
        self.config_change: Any = None  # host/tune.py Change waiting for its CONFIG_REPORT

    # --- life ------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        try:
            self._open()
            self._loop()
            return 0
        except Stop:
            self._leave()
            return 0
        finally:
            self._close()

    def _install_signals(self) -> None:
        def on_signal(signum, _frame):
            self._signals += 1
            if self._signals > 1:  # the crash path: resume on the next start handles it
                os.write(2, b"serialine-agent: WARNING second signal: exiting at once\n")
                os._exit(1)
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _open(self) -> None:
        from .link import HostLink
        cfg = self.cfg
        self.conn = _open_ledger(cfg.ledger)
        self._alarm_seen = self.conn.execute("SELECT COALESCE(MAX(alarm_id), 0) FROM alarm_log").fetchone()[0]
        self._open_control()
        self._open_opcua()
        self._open_console()
        self.forwarding = Forwarding(cfg.ledger, cfg.upstream)
        self.forwarding.start()
        self.link = self._open_link(HostLink)
        self.coder = self._open_driver("coder", cfg.coder)
        self.camera = self._open_driver("camera", cfg.camera)

    def _open_link(self, cls):
        """The device's port, waited for with backoff (a USB device not plugged in yet, a serial
        server not up); a port the line file cannot mean is one line."""
        port, baud = self.cfg.device.port, int(getattr(self.cfg.device, "baud", 115200) or 115200)
        wait, said = RECONNECT_FIRST_S, False
        while True:
            try:
                return cls(port, baudrate=baud)
            except ValueError as exc:  # pyserial: not a port URL it knows
                raise ServiceError(f"[device] port = {port!r}: {_first_line(exc)}") from None
            except (serial.SerialException, OSError) as exc:
                if not said:
                    log.warning("device port %s: cannot open it (%s); retrying every %g..%g s", port,
                                _first_line(exc), RECONNECT_FIRST_S, RECONNECT_MAX_S)
                    said = True
                self._wait_serving(wait)
                wait = min(RECONNECT_MAX_S, wait * 2)

    def _open_control(self) -> None:
        address = getattr(getattr(self.cfg, "control", None), "address", None)
        if not address:
            return
        from .control import ControlServer, ledger_authorizer
        # on a ledger with users a command's user proves it (password, role) before the loop sees it
        self.control = ControlServer.at(address, authorize=ledger_authorizer(self.cfg.ledger))
        log.info("control interface on http://%s", self.control.address)

    def _open_opcua(self) -> None:
        """[opcua]: PackML for the line (on the control interface) and the ledger's OPEN-SCS pools, in
        their own thread with their own ledger connection (docs/opcua.md)."""
        spec = getattr(self.cfg, "opcua", None)
        if spec is None:
            return
        from .opcua.server import Background
        conn = _open_ledger(self.cfg.ledger)
        try:
            self.opcua = Background(conn, spec.endpoint, spec.users, spec.pki or f"{self.cfg.ledger}.opcua-pki",
                                    anonymous=spec.anonymous,
                                    control=self.control.address if self.control is not None else None).start()
        except (ValueError, OSError) as exc:
            conn.close()
            raise ServiceError(f"[opcua] {_first_line(exc)}") from None
        self.opcua.conn = conn

    def _open_console(self) -> None:
        """[console]: the operator and QA console, served from a thread of its own on the control
        interface and the ledger (docs/console.md)."""
        spec = getattr(self.cfg, "console", None)
        if spec is None:
            return
        from .console.serve import ConsoleError, Server
        from .control import parse_address
        host, port = parse_address(spec.address)
        try:
            self.console = Server(self.cfg.ledger, self.control.address if self.control is not None else None,
                                  host, port, tls_cert=spec.tls_cert or None, tls_key=spec.tls_key or None).start()
        except ConsoleError as exc:
            raise ServiceError(f"[console] {exc}") from None
        log.info("console on %s/", self.console.url)

    def _open_driver(self, kind: str, spec) -> Watched:
        """Open it, waiting with backoff (the control interface answers meanwhile)."""
        from .devices.lineclient import DeviceError
        wait, said = RECONNECT_FIRST_S, False
        while True:
            try:
                driver = open_driver(kind, spec.driver, spec.address, getattr(spec, "options", {}) or {})
            except (DeviceError, OSError) as exc:
                if not said:
                    log.warning("%s at %s: %s; retrying every %g..%g s", kind, spec.address, _first_line(exc),
                                RECONNECT_FIRST_S, RECONNECT_MAX_S)
                    said = True
                self._wait_serving(wait)
                wait = min(RECONNECT_MAX_S, wait * 2)
                continue
            except ValueError as exc:  # a bad driver option (the registry's check)
                raise ServiceError(f"[{kind}] {_first_line(exc)}") from None
            log.info("%s connected at %s (driver %s)", kind, spec.address, spec.driver)
            return Watched(kind, spec.address, driver)

    def _wait_serving(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_stop()
            self._serve_requests()
            self._publish(force=True)
            time.sleep(0.05)

    def _check_stop(self) -> None:
        if self.stopping:
            raise Stop()

    def _close(self) -> None:
        if self.console is not None:
            self.console.close()
        if self.opcua is not None:
            self.opcua.stop()
            self.opcua.conn.close()
        if self.control is not None:
            self._publish(force=True, ready=False)
            self.control.close()
        if self.forwarding is not None:
            self.forwarding.close()
        for driver in (self.coder, self.camera):
            if driver is not None:
                driver.close()
        if self.agent is not None:
            self.agent.release()
        if self.link is not None:
            self.link.close()
        if self.conn is not None:
            self.conn.close()

    # --- the batch ---------------------------------------------------------------------------
    def _new_agent(self, batch_id: str):
        from .agent import Agent
        cfg = self.cfg
        kw: dict[str, Any] = {}
        fill = getattr(cfg.agent, "fill_ahead", None)
        if fill:
            kw["fill_ahead"] = int(fill)
        grade = getattr(cfg.camera, "min_grade", None)
        if grade is not None:
            kw["min_grade"] = grade  # a letter or 0..4: the judge reads both
        window = getattr(cfg.agent, "correlation_window_ms", None)
        if window:
            kw["window_s"] = float(window) / 1000
        return Agent(self.conn, batch_id, self.link, self.coder, self.camera, **kw)

    def _select_batch(self) -> None:
        """--batch, or wait for POST /batch/select; then open the session with the device."""
        if self.batch_arg is not None:
            self.agent = self._new_agent(self.batch_arg)  # AgentError: one line, exit 1
            log.info("batch %s: running it", self.batch_arg)
        else:
            log.info("no batch: waiting for one to be selected (POST /batch/select)")
            while self.agent is None:
                self._wait_serving(0.1)
        self._connect_device()

    def _connect_device(self) -> None:
        from .link import FingerprintMismatch, LinkError
        said = False
        while True:
            self._check_stop()
            try:
                hello = self.agent.start(timeout=CONNECT_S)
            except FingerprintMismatch:
                raise
            except LinkError as exc:
                if not said:
                    log.warning("device: %s; still trying", exc)
                    said = True
                self._serve_requests()
                self._publish(force=True)
                continue
            break
        self._on_boot(hello, resumed=self.agent.resuming, batch_changed=True)

    # --- one boot ----------------------------------------------------------------------------
    def _on_boot(self, hello: dict, resumed: bool, batch_changed: bool = False) -> None:
        """A session on a boot this service has not handled: configure it (or take it as resumed).
        After a batch change on the same boot the line waits for the operator's start."""
        self._batch_changed = batch_changed and int(hello["boot_id"]) == self.boot_id
        want = getattr(self.cfg.device, "device_id", "")
        if want and _text(hello["device_id"]) != want:
            raise ServiceError(f"the device on {self.cfg.device.port} is {_text(hello['device_id'])!r}, the line file"
                               f" expects [device] device_id = {want!r}: is this the right port?")
        board = getattr(self.cfg.device, "board", "")
        if board and _text(hello["board"]) != board:
            log.warning("the device reports board %s, the line file says [device] board = %s",
                        _text(hello["board"]), board)
        self.boot_id = int(hello["boot_id"])
        self.configured, self._ready = False, False
        log.info("device %s boot %d: firmware %s, board %s, schema fingerprint 0x%08x, state %s%s",
                 _text(hello["device_id"]), self.boot_id, _text(hello["fw_version"]), _text(hello["board"]),
                 int(hello["fingerprint"]), _state(hello.get("state")),
                 " (resumed: line stop latched until its events are in)" if resumed else "")
        if resumed:  # configured and running already: its stop is the agent's
            self.configured = self._ready = True
            return
        self._send_config()

    def _send_config(self) -> None:
        from . import linefile
        self.config_id += 1
        self._config_fields = linefile.device_fields(self.cfg, self.config_id)
        self.link.last_config_report = None
        self.link.send("CONFIG_SET", self._config_fields)
        self._config_sent_at, self._config_warned = time.monotonic(), False

    def _check_config_report(self) -> None:
        if self.configured:
            return
        rep, now = self.link.last_config_report, time.monotonic()
        if rep is None:
            if not self._config_warned and now - self._config_sent_at > CONFIG_REPORT_WARN_S:
                self._config_warned = True
                log.warning("device: no CONFIG_REPORT %g s after the configuration was sent; still waiting",
                            CONFIG_REPORT_WARN_S)
            return
        result = int(rep["result"])
        same = all(rep.get(k) == v for k, v in self._config_fields.items() if k != "config_id")
        if result == ConfigResult.BUSY and not same:  # units in flight: the device takes it once they are out
            if not self._busy_said:
                self._busy_said = True
                log.warning("device busy (units in flight) with a configuration other than the line file's;"
                            " sending it again every %g s", CONFIG_RETRY_S)
            if now - self._config_sent_at >= CONFIG_RETRY_S:
                self._send_config()
            return
        if result not in (ConfigResult.OK, ConfigResult.BUSY):
            from . import linefile
            raise ServiceError(linefile.explain_refusal(rep, self.cfg))
        if result == ConfigResult.OK and int(rep["config_id"]) != self.config_id:
            return  # the answer to an earlier CONFIG_SET
        self.configured, self._busy_said = True, False
        hello = self.link.hello or {}
        shown = self.config_id if result == ConfigResult.OK else int(rep["config_id"])
        how = "applied" if result == ConfigResult.OK else "kept"
        log.info("configuration %d %s on boot %d (firmware %s, board %s, schema fingerprint 0x%08x)%s",
                 shown, how, self.boot_id, _text(hello.get("fw_version", "?")), _text(hello.get("board", "?")),
                 int(hello.get("fingerprint", FINGERPRINT)),
                 "" if result == ConfigResult.OK else ": units in flight, and the one the device stored is the line file's")
        from . import challenge  # a changed configuration is audited: batch start's [policy] challenge reads it
        with transaction(self.conn):
            challenge.record_configuration(self.conn, self.cfg, self._config_fields, user=USER, boot_id=self.boot_id,
                                           device_id=_text(hello.get("device_id", "")), config_id=shown, how=how)
        if getattr(self.cfg.agent, "start_on_boot", False) and not self._batch_changed:
            from .control import Request
            why = challenge.start_refusal(self, Request("line.start", {}, USER, f"[agent] start_on_boot: boot"
                                                        f" {self.boot_id} configured"))  # audited there
            if why:
                log.warning("start_on_boot: %s", why)
            else:
                self.link.send("COMMAND", {"command": int(Command.START), "arg": 0})
                log.info("line started (start_on_boot)")
        self._ready = True

    # --- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        from .agent import BatchEnded
        self._select_batch()
        while True:
            if self.stopping:
                raise Stop()
            self._supervise()  # first: a connection gone is said before what the agent makes of it
            try:
                self.agent.step(0.002)
            except BatchEnded as exc:
                log.error("%s", exc)
                self._batch_gone()
                continue
            if self.agent.boot_id != self.boot_id:  # the agent booked a new boot in this step
                self._on_boot(dict(self.link.hello), resumed=False)
            self._check_config_report()
            self._watch_link()
            self._serve_requests()
            self._step_tools()
            self._publish()

    def _watch_link(self) -> None:
        up = self.link.up
        if up != self._link_up:
            self._link_up = up
            if up:
                log.info("device link back (session %d)", self.link.sessions)
            else:
                log.warning("device link lost: nothing heard from %s for %g s; reconnecting",
                            self.cfg.device.port, self.link.timeout)

    def _batch_gone(self) -> None:
        """The batch was closed under the line: the agent is done; wait for the next batch."""
        self.agent.release()
        self.agent, self.batch_arg, self._ready = None, None, False
        self._select_batch()

    def _supervise(self) -> None:
        now = time.monotonic()
        for w in (self.coder, self.camera):
            what = w.check(now)
            if what == "lost":
                self._alarm(w.kind, f"{w.kind.upper()}_LOST", f"{w.kind} at {w.address}: connection lost; line stop"
                            f" latched, reconnecting every {RECONNECT_FIRST_S:g}..{RECONNECT_MAX_S:g} s")
                self.link.send("COMMAND", {"command": int(Command.STOP), "arg": 0})
            elif what == "back":
                reset = w.kind == "coder"
                self._alarm(w.kind, f"{w.kind.upper()}_BACK", f"{w.kind} at {w.address}: connected again; "
                            + ("its queue is unknown: the coder is cleared once the belt is still" if reset
                               else "camera pairing restarts once the belt is still")
                            + "; clear the alarm to restart the line")
                self.agent.driver_back(w.kind)

    def _alarm(self, source: str, kind: str, detail: str) -> None:
        self.agent.alarm(source, kind, detail)

    # --- control -----------------------------------------------------------------------------
    def _serve_requests(self) -> None:
        if self.control is None:
            return
        for req in self.control.requests():
            try:
                msg = self._execute(req)
            except sqlite3.Error as exc:
                req.refuse(sentence(exc))
                continue
            except Exception as exc:  # the service's bug must not leave a client hanging
                req.refuse(f"{type(exc).__name__}: {exc}")
                raise
            if isinstance(msg, str):
                log.warning("%s by %s refused: %s", req.command, req.user, msg)
                req.refuse(msg)
            elif msg is not None:  # None: answered after a device round trip (_step_tools)
                req.reply(msg)

    def _step_tools(self) -> None:
        """The line engineer's tools on the loop: a challenge run, a configuration change."""
        if self.challenge is not None:
            try:
                self.challenge.step()
            except sqlite3.OperationalError as exc:  # busy: its record is written at a later step
                log.warning("challenge %d: %s; retrying", self.challenge.token, sentence(exc))
        if self.config_change is not None:
            from . import tune
            tune.step_change(self)

    def _execute(self, req):
        """A control command on the loop thread → reply dict, or the refusal (str)."""
        if req.command == "batch.select":
            return self._cmd_select(req)
        if req.command == "challenge.run":
            from . import challenge
            return challenge.execute(self, req)
        if req.command == "device.config.set":
            from . import tune
            return tune.execute_change(self, req)
        name = {"line.start": "START", "line.stop": "STOP", "line.clear": "CLEAR_ALARM"}.get(req.command)
        if name is None:
            return f"unknown command {req.command}"
        if self.agent is None:
            return "no batch is selected: select one first (POST /batch/select)"
        if self.stopping:
            return "the agent is stopping"
        if name != "STOP":
            lost = [w.kind for w in (self.coder, self.camera) if w.lost]
            if lost:
                return f"{req.command} refused: the line stays stopped while the {' and '.join(lost)} is lost"
            if self.agent.line_stop:
                return f"{req.command} refused: the line stays stopped ({self.agent.line_stop})"
            if not self.configured:
                return f"{req.command} refused: the device is not configured yet"
            st = self.link.last_status or {}
            if name == "START" and st.get("state") == DeviceState.STOPPED:
                return "line.start refused: the device has latched a line stop; clear it (line.clear) to restart"
        if name in ("START", "CLEAR_ALARM"):  # both set the line running
            from . import challenge
            if why := challenge.start_refusal(self, req):  # [policy] challenge: audited there
                return why
        with transaction(self.conn):
            audit.append(self.conn, req.user, req.command, self._audit_detail(req))
        sent = self.agent.command(name)
        held = not sent and self.agent.resuming
        log.info("%s by %s (%s)%s", req.command, req.user, req.reason,
                 ": held until the resume is done" if held else "")
        return {"command": req.command, "held": held}

    def _audit_detail(self, req, **more) -> dict:
        return {"line_id": getattr(getattr(self.cfg, "identity", None), "line_id", None),
                "batch_id": self.agent.ledger.batch.batch_id if self.agent else None,
                "device_id": self.agent.device_id if self.agent else None,
                "boot_id": self.agent.boot_id if self.agent else None, **more, "reason": req.reason}

    def _cmd_select(self, req):
        from .agent import AgentError
        batch_id = req.args.get("batch")
        if self.agent is not None:
            current = self.agent.ledger.batch.batch_id
            if current == batch_id:
                return {"batch": batch_id, "already": True}
            return f"batch {current} is being run: it must end (close or abort) before another is selected"
        try:
            agent = self._new_agent(batch_id)
        except AgentError as exc:
            return str(exc)
        with transaction(self.conn):
            audit.append(self.conn, req.user, "batch.select", self._audit_detail(req, batch_id=batch_id))
        self.agent = agent
        log.info("batch %s selected by %s (%s)", batch_id, req.user, req.reason)
        return {"batch": batch_id}

    # --- status ------------------------------------------------------------------------------
    def _publish(self, force: bool = False, ready: bool | None = None) -> None:
        now = time.monotonic()
        # each read stands alone: a busy or failing one keeps its own last figures, never the other's
        if now - self._alarms_at >= ALARMS_EVERY_S or force:
            self._alarms_at = now
            self._read("alarms", self._read_alarms)
        if now - self._status_at >= STATUS_EVERY_S or force:
            self._status_at = now
            self._read("figures", self._read_figures)
        if self.control is None or (now - self._published_at < PUBLISH_EVERY_S and not force and ready is None):
            return
        self._published_at = now
        hello = (self.link.hello if self.link is not None else None) or {}
        st = (self.link.last_status if self.link is not None else None) or {}
        agent = self.agent
        self.control.set_status({
            "ready": self._ready if ready is None else ready,
            "line_id": getattr(getattr(self.cfg, "identity", None), "line_id", None),
            "batch": agent.ledger.batch.batch_id if agent else None,
            "device": {"port": self.cfg.device.port, "device_id": _text(hello.get("device_id", "")) or None,
                       "boot_id": self.boot_id, "fw_version": _text(hello.get("fw_version", "")) or None,
                       "board": _text(hello.get("board", "")) or None,
                       "fingerprint": f"0x{int(hello['fingerprint']):08x}" if hello else None,
                       "state": _state(st.get("state", hello.get("state"))),
                       "configured": self.configured},
            "resuming": bool(agent and agent.resuming),
            "line_stop": agent.line_stop if agent else None,
            "coder": _conn_state(self.coder), "camera": _conn_state(self.camera),
            "counts": self._figures.get("counts", {}),
            "alarms": self._alarms[-20:],
            "outbox": self._figures.get("outbox", {}),
            "stopping": self.stopping,
            # for the console (host/console/): belt speed, verdict latency of the last 500 verdicts vs the budget
            "speed_mm_s": _speed_mm_s(st, self.cfg),
            "verdict_latency_ms": self._figures.get("verdict_latency_ms", {}),
            "budget_ms": self._figures.get("budget_ms"),
            "print_quality": agent.trend.status() if agent else None,  # host/trend.py: drift before packs fail
            "challenge": self.challenge.view() if self.challenge is not None else None,
            "device_config": _device_config(self),
        })

    def _read(self, what: str, read) -> None:
        """One status read; a failure is said once per episode (busy: retried at its next turn)."""
        try:
            read()
        except sqlite3.Error as exc:
            if what not in self._read_failing:
                self._read_failing.add(what)
                log.warning("status %s: %s; the last ones stand, retrying", what, sentence(exc))
            return
        if what in self._read_failing:
            self._read_failing.discard(what)
            log.info("status %s: read again", what)

    def _read_alarms(self) -> None:
        c = self.conn
        rows = c.execute("SELECT alarm_id, at, source, alarm, detail FROM alarm_log WHERE alarm_id > ?"
                         " ORDER BY alarm_id", (self._alarm_seen,)).fetchall()
        for alarm_id, at, source, kind, detail in rows:
            self._alarm_seen = alarm_id
            log.warning("alarm %s %s: %s", source, kind, detail)
            when = _dt.datetime.fromtimestamp(at, _dt.timezone.utc).isoformat(timespec="milliseconds")
            self._alarms.append({"at": when.replace("+00:00", "Z"), "source": source, "alarm": kind, "detail": detail})
        del self._alarms[:-20]
        if self.agent is not None and self.agent.boot_id is not None:
            self._device_alarms()

    def _read_figures(self) -> None:
        c = self.conn
        if self.agent is not None:
            batch_id = self.agent.ledger.batch.batch_id
            counts = dict(c.execute("SELECT COALESCE(outcome, 'in_flight'), COUNT(*) FROM unit_row WHERE batch_id=?"
                                    " GROUP BY outcome", (batch_id,)).fetchall())  # unit_batch's order: no sort
            counts["detected"] = sum(counts.values())
            self._figures["counts"] = counts
            if "budget_ms" not in self._figures:
                self._figures["budget_ms"] = _budget_ms(self.cfg)
            ms = sorted(1000 * x for x in itertools.islice(reversed(self.agent.verdict_latency_s), 500))
            if ms:
                self._figures["verdict_latency_ms"] = {"p50": round(ms[len(ms) // 2], 3), "n": len(ms),
                                                       "p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
                                                       "max": round(ms[-1], 3)}  # one outlier shows here
        from .epcis import outbox
        try:
            self._figures["outbox"] = outbox.counts(c)
        except sqlite3.OperationalError:  # busy (or a ledger without an outbox): the last ones stand
            self._figures.setdefault("outbox", {})

    def _device_alarms(self) -> None:
        """The device's own ALARM events of this boot (stored by the agent), one line each."""
        a = self.agent
        key = (a.device_id, a.boot_id)
        if self._device_alarm_at[0] != key:
            self._device_alarm_at = (key, -1)
        rows = list(devevents.events(self.conn, device_id=key[0], boot_id=key[1], names=("ALARM",),
                                     after_seq=self._device_alarm_at[1]))
        top = devevents.top_seq(self.conn, *key)  # the next look starts after what is stored now
        self._device_alarm_at = (key, max(self._device_alarm_at[1], -1 if top is None else top))
        for e in rows:  # unit_seq is a column (the body no longer repeats it)
            unit, f = e.unit_seq, e.fields
            log.warning("device alarm %s %s%s", _enum_name(Alarm, f.get("alarm")),
                        "raised" if f.get("active") else "cleared",
                        f" (unit {unit})" if isinstance(unit, int) and unit != NO_UNIT else "")

    # --- SIGTERM -----------------------------------------------------------------------------
    def _leave(self) -> None:
        """A controlled stop (docs/agent.md "SIGTERM"): STOP drops the run permissive (the infeed
        holds); while the belt runs out, the units in flight are judged as ever and reach their
        outcome. Once each unit of this boot has one and every event is stored and acked, leave.
        If the belt stands with units still short of the gate (the stop halts the belt), or after
        DRAIN_S, PURGE them: the device rejects each of them whatever the host said (fail safe), at
        the gate when the line next moves, or as PURGED/UNKNOWN at its next boot; the next start
        resumes them. The ledger is closed by _close."""
        agent = self.agent
        log.info("stopping: line stop sent, the packs on the belt ride on to their outcome (at most %g s)", DRAIN_S)
        if agent is None or agent.boot_id is None:
            return
        self.link.send("COMMAND", {"command": int(Command.STOP), "arg": 0})
        t0 = time.monotonic()
        left = self._drain(DRAIN_S, still_s=STILL_S)
        if left == 0:
            log.info("stopped: every unit in flight has its outcome, everything stored and acknowledged")
            return
        if left is None:  # the batch ended or the link went: nothing more can be stored or sent
            return
        self.link.send("COMMAND", {"command": int(Command.PURGE), "arg": 0})
        self._drain(2.0, still_s=None, acked_only=True)
        log.warning("stopping: %d unit(s) of boot %s still without an outcome after %.1f s; the device keeps their"
                    " events: purged, the device rejects each when the line next moves (or books it at its next"
                    " boot), and the next start resumes them", left, agent.boot_id, time.monotonic() - t0)

    def _drain(self, seconds: float, *, still_s: float | None, acked_only: bool = False) -> int | None:
        """Step the agent until no unit of this boot is without an outcome and nothing waits to be
        sent (acked_only: until nothing waits to be sent), for at most `seconds`, or until the
        device has reported a still belt for `still_s` → the units left (None: stepping failed)."""
        agent, end, still_since, left = self.agent, time.monotonic() + seconds, None, -1
        seen, before = None, None
        while time.monotonic() < end:
            try:
                agent.step(0.01)
            except Exception as exc:  # the batch ended, the link went: nothing more can be stored
                log.warning("stopping: %s", _first_line(exc))
                return None
            self._serve_requests()
            self._publish()
            if acked_only:
                if not self.link.tx_pending:
                    return left
                continue
            try:
                left = self._in_flight()
            except sqlite3.OperationalError:  # another writer holds the lock: ask again next step
                continue
            if left == 0 and not self.link.tx_pending:
                return 0
            st = self.link.last_status
            if still_s is None or st is None or st is seen:
                continue
            seen = st  # a fresh STATUS from the device: the belt is still, or moving
            now = time.monotonic()
            if st.get("speed_cps") or left != before:  # moving, or outcomes still coming in
                still_since, before = None, left
            elif still_since is None:
                still_since = now
            elif now - still_since >= still_s and left:
                return left
        return left if left >= 0 else None

    def _in_flight(self) -> int:
        a = self.agent
        # by unit_batch (batch, outcome NULL): the few in flight; '+' keeps SQLite off the key, a walk of the boot's units
        (n,) = self.conn.execute("SELECT COUNT(*) FROM unit_row WHERE batch_id IN (SELECT batch_id FROM device_boot"
                                 " WHERE device_id=?1 AND boot_id=?2) AND outcome IS NULL AND +device_id=?1 AND +boot_id=?2",
                                 (a.device_id, a.boot_id)).fetchone()
        return n


def _device_config(service) -> dict | None:
    from . import tune
    return tune.view(service)


def _speed_mm_s(st: dict, cfg) -> float | None:
    cpm = getattr(getattr(cfg, "geometry", None), "counts_per_mm", None)
    return round(st["speed_cps"] / cpm, 1) if cpm and isinstance(st.get("speed_cps"), int) else None


def _budget_ms(cfg) -> float | None:
    from . import linefile
    try:
        budget = linefile.decision_budget_ms(cfg)
    except Exception:  # a line file the device would refuse has no budget to show
        return None
    return round(budget, 3) if budget != float("inf") else None


def _conn_state(w: Watched | None) -> str:
    if w is None:
        return "not connected"
    return "lost" if w.lost else "connected"


def _text(value) -> str:
    return str(value).rstrip("\x00").strip()


def _enum_name(enum_cls, value) -> str:
    try:
        return enum_cls(int(value)).name
    except (TypeError, ValueError):
        return str(value)


def _state(value) -> str | None:
    if value is None:
        return None
    try:
        return DeviceState(int(value)).name
    except ValueError:
        return str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run(cfg, batch: str | None = None) -> int:
    """The service on a loaded line file → exit status; expected failures are one line."""
    from .agent import AgentError
    from .devices.lineclient import DeviceError
    from .ledgerfile import LedgerFileError
    from .link import LinkError
    from .control import ControlError
    try:
        return Service(cfg, batch).run()
    except (ServiceError, AgentError, LinkError, DeviceError, LedgerFileError, ControlError, ValueError) as exc:
        log.error("%s", _first_line(exc))
        return 1
    except sqlite3.Error as exc:
        log.error("ledger: %s", sentence(exc))
        return 1
    except serial.SerialException as exc:  # the port went away under us (a USB device unplugged, ...)
        log.error("device port %s: %s", cfg.device.port, _first_line(exc))
        return 1
    except OSError as exc:
        log.error("%s", sentence(exc))
        return 1
