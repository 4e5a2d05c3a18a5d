"""`serialine frames`: read the wire — a captured byte stream as frames, with what went wrong.

    serialine frames CAPTURE.bin [--json]           a file of raw link bytes
    serialine frames --hex "a5 5a 06 00 ..." [--json]   (--hex - : hex text on stdin)
    serialine frames --port URL [--save FILE] [--seconds S] [--json]   a live port (pyserial URL)
    serialine frames --tee DEVICE_PORT [--seconds S] [--json]
        a tee: makes a pty for the host program (its path printed on stderr), relays both ways to
        DEVICE_PORT and decodes each direction

Each frame: time (s since the capture began; live only), byte offset, direction, message name, seq,
ack, fields (enums by name), and flags: `resync` (bytes were skipped before it), `retransmission`
(a sequenced message with a seq already seen in this session), `fingerprint_mismatch` (a HELLO or
HELLO_REPLY from another schema or protocol version, or refused), `out_of_range` (an enum value
its enumeration lacks). Between frames: `crc_error` (a candidate frame whose CRC failed),
`bad_header`, `skipped` (garbage bytes). The decoding is the host's own StreamDecoder
(protocol/fastcodec.py): what is shown as a frame is exactly what the host link would accept.
`--json`: one object per line, the last one `{"summary": {...}}`."""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from serialine.protocol import schema as S
from serialine.protocol.fastcodec import StreamDecoder, ValueOutOfRange, as_dict

_ENUMS = {m.msg_type: {f.name: f.enum for f in S.flat_fields(m.payload) if f.enum is not None}
          for m in S.MESSAGES}
_HELLOS = (S.BY_NAME["HELLO"].msg_type, S.BY_NAME["HELLO_REPLY"].msg_type)
_WINDOW = 128  # seq numbers within this many of a recent one are the same message again


@dataclass
class Stream:
    """One direction of a link: bytes in, records out (frames and the errors between them)."""

    direction: str | None = None  # "host>device" / "device>host" on a tee; None: from the message
    decoder: StreamDecoder = field(default_factory=StreamDecoder)
    offset: int = 0  # bytes fed
    framed: int = 0  # bytes in frames yielded
    skipped_since: int = 0  # garbage bytes since the last frame
    seen: dict[str, deque] = field(default_factory=dict)  # direction -> recent seqs this session
    counts: dict[str, int] = field(default_factory=lambda: dict(
        frames=0, crc_errors=0, bad_headers=0, skipped_bytes=0, retransmissions=0,
        fingerprint_mismatches=0, out_of_range=0))

    def feed(self, data: bytes, t: float | None = None) -> list[dict]:
        out: list[dict] = []
        d = self.decoder
        for b in data:  # a byte at a time: each frame and each error gets its exact offset
            crc, hdr, skipped = d.bad_crc, d.bad_header, d.skipped_bytes
            got = d.feed(bytes((b,)))
            self.offset += 1
            at = self.framed + skipped  # a dropped candidate began at the first unconsumed byte
            if d.bad_crc > crc:
                out.append(self._error("crc_error", t, d.bad_crc - crc, at))
                self.counts["crc_errors"] += d.bad_crc - crc
            if d.bad_header > hdr:
                out.append(self._error("bad_header", t, d.bad_header - hdr, at))
                self.counts["bad_headers"] += d.bad_header - hdr
            self.skipped_since += d.skipped_bytes - skipped
            for msg_type, seq, ack, values in got:
                out.extend(self._frame(msg_type, seq, ack, values, t))
        return out

    def flush(self, t: float | None = None) -> list[dict]:
        """The end of the capture: what is left over is reported as skipped."""
        left = self.skipped_since + self.offset - self.framed - self.decoder.skipped_bytes
        self.skipped_since = 0
        if not left:
            return []
        self.counts["skipped_bytes"] += left
        return [{"t": t, "offset": self.offset - left, "dir": self.direction, "error": "skipped",
                 "bytes": left, "detail": "incomplete or garbage at the end of the capture"}]

    def _error(self, kind: str, t: float | None, n: int, at: int) -> dict:
        return {"t": t, "offset": at, "dir": self.direction, "error": kind, "count": n}

    def _frame(self, msg_type: int, seq: int, ack: int, values, t: float | None) -> list[dict]:
        msg = S.BY_TYPE[msg_type]
        flags: list[str] = []
        out: list[dict] = []
        if isinstance(values, ValueOutOfRange):
            fields, detail = dict(values.fields), values.detail
            flags.append("out_of_range")
            self.counts["out_of_range"] += 1
        else:
            fields, detail = as_dict(msg_type, values), None
        length = _frame_len(msg_type, fields)
        self.framed += length
        start = self.offset - length
        if self.skipped_since:
            out.append({"t": t, "offset": start - self.skipped_since, "dir": self.direction,
                        "error": "skipped", "bytes": self.skipped_since})
            self.counts["skipped_bytes"] += self.skipped_since
            self.skipped_since = 0
            flags.append("resync")
        direction = self.direction or (msg.direction if msg.direction != "both" else None)
        if msg_type in _HELLOS:
            self.seen.clear()  # a session numbers from 0 again
            status = fields.get("status", S.HelloStatus.OK)
            if fields["fingerprint"] != S.FINGERPRINT or fields["proto_version"] != S.PROTOCOL_VERSION \
                    or status != S.HelloStatus.OK:
                flags.append("fingerprint_mismatch")
                self.counts["fingerprint_mismatches"] += 1
                detail = (f"fingerprint 0x{fields['fingerprint']:08x} protocol {fields['proto_version']}"
                          f", this schema 0x{S.FINGERPRINT:08x} protocol {S.PROTOCOL_VERSION}")
        if msg.sequenced:
            recent = self.seen.setdefault(direction or "?", deque(maxlen=_WINDOW))
            if seq in recent:
                flags.append("retransmission")
                self.counts["retransmissions"] += 1
            else:
                recent.append(seq)
        for name, enum in _ENUMS[msg_type].items():
            v = fields.get(name)
            if isinstance(v, int) and v in set(enum):
                fields[name] = enum(v).name
        self.counts["frames"] += 1
        rec = {"t": t, "offset": start, "dir": direction, "msg": msg.name, "seq": seq, "ack": ack,
               "fields": fields, "flags": flags}
        if detail:
            rec["detail"] = detail
        out.append(rec)
        return out


def _frame_len(msg_type: int, fields: dict) -> int:
    m = S.BY_TYPE[msg_type]
    n = S.HEADER_SIZE + S.CRC_SIZE
    for f in S.flat_fields(m.payload):
        n += (1 + len(fields[f.name])) if f.kind not in ("int", "str_fixed") else f.size
    return n


def text(rec: dict) -> str:
    t = "" if rec.get("t") is None else f"{rec['t']:10.6f} "
    where = f"{t}@{rec['offset']:<7} {rec.get('dir') or '':<11}"
    if "error" in rec:
        what = {"crc_error": "CRC error: a frame dropped", "bad_header": "bad header: a frame dropped",
                "skipped": f"skipped {rec.get('bytes')} bytes"}[rec["error"]]
        return f"{where} !! {what}" + (f" ({rec['detail']})" if rec.get("detail") else "")
    fields = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in rec["fields"].items())
    flags = "".join(f" [{f}]" for f in rec["flags"])
    detail = f" ({rec['detail']})" if rec.get("detail") else ""
    return f"{where} {rec['msg']:<14} seq={rec['seq']:<3} ack={rec['ack']:<3} {fields}{flags}{detail}"


def parse_hex(s: str) -> bytes:
    clean = "".join(s.replace(":", " ").replace(",", " ").replace("0x", " ").split())
    try:
        return bytes.fromhex(clean)
    except ValueError:
        raise ValueError("--hex: not hex text (pairs of 0-9 a-f, spaces or colons between)") from None


class Printer:
    def __init__(self, as_json: bool, stream=None) -> None:
        self.as_json, self.out = as_json, stream or sys.stdout

    def __call__(self, recs: list[dict]) -> None:
        for r in recs:
            print(json.dumps(r) if self.as_json else text(r), file=self.out, flush=True)

    def summary(self, streams: list[Stream]) -> None:
        total: dict[str, int] = {}
        for s in streams:
            for k, v in s.counts.items():
                total[k] = total.get(k, 0) + v
        if self.as_json:
            print(json.dumps({"summary": total}), file=self.out)
        else:
            print("-- " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in total.items()), file=self.out)


def _live(args, printer: Printer) -> list[Stream]:
    import serial  # type: ignore[import-untyped]

    try:
        dev = serial.serial_for_url(args.port or args.tee, baudrate=args.baud, timeout=0)
    except serial.SerialException as exc:
        raise ValueError(f"cannot open {args.port or args.tee}: {exc}") from None
    to_host = Stream("device>host" if args.tee else None)
    to_dev = Stream("host>device")
    save = open(args.save, "wb") if args.save else None
    pty_m = -1
    if args.tee:
        pty_m, pty_s = os.openpty()
        import tty

        tty.setraw(pty_s)
        print(f"tee {os.ttyname(pty_s)} (the host program opens it; relayed to {args.tee})",
              file=sys.stderr, flush=True)
    t0 = time.monotonic()
    end = t0 + args.seconds if args.seconds else None
    try:
        while end is None or time.monotonic() < end:
            fds = [dev.fileno()] + ([pty_m] if pty_m >= 0 else [])
            ready, _, _ = select.select(fds, [], [], 0.05)
            now = round(time.monotonic() - t0, 6)
            if dev.fileno() in ready:
                data = dev.read(4096)
                if save:
                    save.write(data)
                if pty_m >= 0 and data:
                    os.write(pty_m, data)
                printer(to_host.feed(data, now))
            if pty_m >= 0 and pty_m in ready:
                try:
                    data = os.read(pty_m, 4096)
                except OSError:
                    data = b""
                if data:
                    dev.write(data)
                    printer(to_dev.feed(data, now))
    except KeyboardInterrupt:
        pass
    finally:
        dev.close()
        if save:
            save.close()
    streams = [to_host] + ([to_dev] if args.tee else [])
    for s in streams:
        printer(s.flush(round(time.monotonic() - t0, 6)))
    return streams


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine frames", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("capture", nargs="?", help="a file of raw link bytes")
    src.add_argument("--hex", help="the bytes as hex text ('-': read it from stdin)")
    src.add_argument("--port", help="a live port to read (pyserial URL)")
    src.add_argument("--tee", metavar="DEVICE_PORT", help="relay a new pty to this port, decode both ways")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--save", help="live: also write the raw bytes read from the port to this file")
    ap.add_argument("--seconds", type=float, default=0, help="live: stop after this long (0: Ctrl-C)")
    ap.add_argument("--baud", type=int, default=115200)
    args = ap.parse_args(argv)
    printer = Printer(args.json)
    try:
        if args.port or args.tee:
            streams = _live(args, printer)
        else:
            if args.hex is not None:
                data = parse_hex(sys.stdin.read() if args.hex == "-" else args.hex)
            else:
                try:
                    with open(args.capture, "rb") as f:
                        data = f.read()
                except OSError as exc:
                    raise ValueError(f"{args.capture}: {exc.strerror}") from None
            s = Stream()
            printer(s.feed(data) + s.flush())
            streams = [s]
    except ValueError as exc:
        print(f"serialine frames: {exc}", file=sys.stderr)
        return 2
    printer.summary(streams)
    return 0
