"""`serialine bench verify`: per symbol at 640×480 — render (print + camera), zxing-cpp's decode alone,
the grading after it (ISO/IEC 15415 parameters, host/verify/grade.py), and the ratio of grading time to
the decode time (goal ≤ 1). Timed one symbol at a time, decode and grade back to back, best of
--repeat, so load from elsewhere on the machine falls on both alike. Render is timed in wall and CPU
time, on the corpus (every symbol its own geometry) and at one line's fixed geometry (the scenario
`images`: the camera map is computed once, render.py). Prints a table, then one JSON object as the last line."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter

import numpy as np

from serialine.host import gs1
from serialine.host.verify import decode as vdecode
from serialine.host.verify.grade import grade
from serialine.host.verify.render import Defects, render


def corpus_defects(rng: np.random.Generator) -> Defects:
    """A line's ordinary spread: mostly good prints, some wear."""
    return Defects(dot_gain=float(rng.uniform(-0.05, 0.12)), smear=float(rng.uniform(0, 0.6)),
                   contrast=float(rng.uniform(0.7, 1.0)), skew_deg=float(rng.uniform(-4, 4)),
                   rotation_deg=float(rng.uniform(0, 360)), noise=float(rng.uniform(0, 0.05)),
                   missing_dots=int(rng.integers(0, 3)))


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine bench verify")
    ap.add_argument("--symbols", type=int, default=300, help="symbols rendered, decoded and graded")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--module-px", type=float, default=6.0, help="camera pixels per module")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="decode and grade each symbol this often, keep the best")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t_render, t_read, t_decode, t_grade, c_render, c_line = [], [], [], [], [], []
    line_d = Defects(noise=0.02, rotation_deg=4.0, skew_deg=0.5)  # scenarios/images.toml [print]
    letters: Counter = Counter()
    errors: Counter = Counter()
    for i in range(args.symbols):
        code = gs1.element_string(gs1.pack_pairs("09506000134352", f"SN{args.seed}{i:010d}", "LOT2612",
                                                 gs1.parse_expiry("2027-06-30")))
        t0, c0 = time.perf_counter(), time.process_time()
        img = render(code, corpus_defects(rng), width=args.width, height=args.height,
                     module_px=args.module_px, seed=args.seed + i)
        t_render.append(time.perf_counter() - t0)
        c1 = time.process_time()
        c_render.append(c1 - c0)
        render(code, line_d, width=args.width, height=args.height, module_px=args.module_px, seed=args.seed + i)
        c_line.append(time.process_time() - c1)
        best = [float("inf")] * 3
        for _ in range(args.repeat):  # back to back; the best of each filters out another job's slices
            t1 = time.perf_counter()
            vdecode.read(img)  # zxing-cpp alone: the reference time
            t2 = time.perf_counter()
            dec = vdecode.decode(img)  # the same decode with the ]d2 and GS1 checks
            t3 = time.perf_counter()
            res = grade(img, dec)
            t4 = time.perf_counter()
            best = [min(best[0], t2 - t1), min(best[1], t3 - t2), min(best[2], t4 - t3)]
        t_read.append(best[0])
        t_decode.append(best[1])
        t_grade.append(best[2])
        letters[res.overall_grade] += 1
        if res.error:
            errors[res.error] += 1
    ratio = statistics.median(g / r for g, r in zip(t_grade, t_read))
    figures = {
        "symbols": args.symbols, "repeat": args.repeat, "image": f"{args.width}x{args.height}", "module_px": args.module_px,
        "render_ms_p50": round(_p(t_render, 50), 3), "render_cpu_ms_p50": round(_p(c_render, 50), 3),
        "render_line_cpu_ms_p50": round(_p(c_line, 50), 3),
        "decode_ms_p50": round(_p(t_read, 50), 3), "decode_ms_p99": round(_p(t_read, 99), 3),
        "decode_gs1_ms_p50": round(_p(t_decode, 50), 3),
        "grade_ms_p50": round(_p(t_grade, 50), 3), "grade_ms_p99": round(_p(t_grade, 99), 3),
        "grade_to_decode_ratio": round(ratio, 2),
        "verify_per_s": round(args.symbols / (sum(t_decode) + sum(t_grade))),
        "overall_grades": dict(sorted(letters.items())), "errors": dict(errors),
    }
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"serialine bench verify: {args.symbols} symbols at {args.width}×{args.height}, "
                        f"{args.module_px:g} px/module")
    for column in ("step", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    table.add_row("render (print defects + camera)", f"{_p(t_render, 50):.3f}", f"{_p(t_render, 99):.3f}")
    table.add_row("render, CPU time", f"{_p(c_render, 50):.3f}", f"{_p(c_render, 99):.3f}")
    table.add_row("render, CPU time, one line's geometry", f"{_p(c_line, 50):.3f}", f"{_p(c_line, 99):.3f}")
    table.add_row("zxing-cpp decode alone", f"{_p(t_read, 50):.3f}", f"{_p(t_read, 99):.3f}")
    table.add_row("decode + ]d2 + GS1 parse", f"{_p(t_decode, 50):.3f}", f"{_p(t_decode, 99):.3f}")
    table.add_row("grade (ISO/IEC 15415 parameters)", f"{_p(t_grade, 50):.3f}", f"{_p(t_grade, 99):.3f}")
    table.add_row("grade ÷ decode (median per symbol; goal ≤ 1)", f"{ratio:.2f}", "")
    Console().print(table)
    print("overall grades: " + ", ".join(f"{k} {v}" for k, v in sorted(letters.items()))
          + (f"; errors: {dict(errors)}" if errors else ""))
    print(json.dumps(figures))
    return 0
