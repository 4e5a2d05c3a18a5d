"""`serialine bench protocol`: frames/s for the construct reference, the fast host codec and the
firmware codec under the real MicroPython unix port. Last line: one JSON object.

    serialine bench protocol [--seconds S] [--mp-frames N]

The frame is UNIT_OUTCOME (the per-unit event, 30 bytes). "decode" on the firmware is the whole
receive path: Deframer.feed + next (resync, length check, CRC-32, copy) + dec_unit_outcome;
"dec" alone is the field decode of a verified frame.
"""

from __future__ import annotations

import json
import sys
import time

from serialine.host.sim import unixport
from serialine.protocol import fastcodec as F
from serialine.protocol import schema as S

MSG = S.BY_NAME["UNIT_OUTCOME"]
FIELDS = (123456, 4567, int(S.Outcome.REJECTED_CONFIRMED), int(S.Reason.NO_VERDICT), -12, 987654, 55555)
DICT = F.as_dict(MSG.msg_type, FIELDS)

MP_SCRIPT = """
import time
import wire
N = %(n)d
buf = bytearray(wire.MAX_FRAME)
out = [0] * wire.MAX_FIELDS
enc = wire.enc_unit_outcome
def bench_enc():
    t0 = time.ticks_us()
    for i in range(N):
        enc(buf, i & 255, 7, i, i, 2, 2, -12, 987654, 55555)
    return time.ticks_diff(time.ticks_us(), t0)
n = enc(buf, 1, 7, 123456, 4567, 2, 2, -12, 987654, 55555)
K = 64
stream = bytearray(n * K)
for k in range(K):
    stream[k * n:(k + 1) * n] = buf[:n]
d = wire.Deframer()
dec = wire.dec_unit_outcome
mv = memoryview(stream)
chunks = [mv[i:i + 128] for i in range(0, len(stream), 128)]  # 128 B reads, as from a UART
def bench_stream():
    frames = 0
    t0 = time.ticks_us()
    for r in range(N // K):
        for c in chunks:
            d.feed(c, len(c))  # always fits: the deframer holds 2 * MAX_FRAME
            t = d.next()
            while t >= 0:
                dec(d.frame, out)
                frames += 1
                t = d.next()
    return frames, time.ticks_diff(time.ticks_us(), t0)
def bench_dec():
    f = buf
    t0 = time.ticks_us()
    for i in range(N):
        dec(f, out)
    return time.ticks_diff(time.ticks_us(), t0)
te = bench_enc()
frames, ts = bench_stream()
td = bench_dec()
print("MP", N, te, frames, ts, td, d.bad_crc, d.skipped_bytes)
"""


def _rate(fn, seconds: float) -> float:
    """Calls per second of fn, timed over about `seconds`."""
    n, t0 = 0, time.perf_counter()
    batch = 1
    while True:
        for _ in range(batch):
            fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt
        batch = min(batch * 2, 4096)


def bench_micropython(n: int) -> dict:
    try:
        proc = unixport.run(["-X", "heapsize=4m", "-c", MP_SCRIPT % {"n": n}], cwd=None,
                            board=None, timeout=300)
    except unixport.UnixPortMissing as e:
        raise SystemExit(str(e)) from None
    line = next((x for x in proc.stdout.splitlines() if x.startswith("MP ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"micropython benchmark failed:\n{proc.stdout}{proc.stderr}")
    n, te, frames, ts, td, bad_crc, skipped = map(int, line.split()[1:])
    if frames != n // 64 * 64 or bad_crc or skipped:
        raise SystemExit(f"micropython deframer lost frames: {line}")
    return {"mp_encode_fps": n / te * 1e6, "mp_decode_fps": frames / ts * 1e6, "mp_dec_fps": n / td * 1e6}


def main(argv: list[str]) -> int:
    seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 0.5
    mp_frames = int(argv[argv.index("--mp-frames") + 1]) if "--mp-frames" in argv else 200_000
    frame = F.encode(MSG.msg_type, 1, 7, FIELDS)
    assert S.build_frame(MSG.msg_type, 1, 7, DICT) == frame  # the codecs agree on what is timed
    stream = frame * 64
    stream_dec = F.StreamDecoder()

    figures = {
        "construct_encode_fps": _rate(lambda: S.build_frame(MSG.msg_type, 1, 7, DICT), seconds),
        "construct_decode_fps": _rate(lambda: S.parse_frame(frame), seconds),
        "host_encode_fps": _rate(lambda: F.encode(MSG.msg_type, 1, 7, FIELDS), seconds),
        "host_decode_fps": _rate(lambda: F.decode(frame), seconds),
        "host_stream_decode_fps": 64 * _rate(lambda: stream_dec.feed(stream), seconds),
    }
    figures.update(bench_micropython(mp_frames))
    figures["host_vs_construct_decode"] = figures["host_decode_fps"] / figures["construct_decode_fps"]
    figures["host_vs_construct_encode"] = figures["host_encode_fps"] / figures["construct_encode_fps"]
    figures = {k: round(v, 1) for k, v in figures.items()}

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"wire protocol: {MSG.name} frame ({len(frame)} bytes), frames/s")
    table.add_column("codec")
    table.add_column("encode", justify="right")
    table.add_column("decode", justify="right")
    table.add_row("construct reference", f"{figures['construct_encode_fps']:,.0f}",
                  f"{figures['construct_decode_fps']:,.0f}")
    table.add_row("fast host codec (struct + crcmod)", f"{figures['host_encode_fps']:,.0f}",
                  f"{figures['host_decode_fps']:,.0f}")
    table.add_row("fast host StreamDecoder", "", f"{figures['host_stream_decode_fps']:,.0f}")
    table.add_row("firmware under MicroPython (Deframer + dec)", f"{figures['mp_encode_fps']:,.0f}",
                  f"{figures['mp_decode_fps']:,.0f}")
    table.add_row("firmware dec_unit_outcome alone", "", f"{figures['mp_dec_fps']:,.0f}")
    console = Console()
    console.print(table)
    ok_host = figures["host_vs_construct_decode"] >= 10 and figures["host_vs_construct_encode"] >= 10
    ok_mp = figures["mp_decode_fps"] >= 200_000
    console.print(f"fast host vs construct: decode x{figures['host_vs_construct_decode']}, encode "
                  f"x{figures['host_vs_construct_encode']} (target x10: {'met' if ok_host else 'MISSED'}); "
                  f"MicroPython decode target 200k/s: {'met' if ok_mp else 'MISSED'}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
