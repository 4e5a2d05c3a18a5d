"""`serialine bench NAME`: each benchmark prints its figures and, as its last line, one JSON object."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "protocol": "serialine.tools.bench_protocol",
    "firmware": "serialine.tools.bench_firmware",
    "host": "serialine.tools.bench_host",
    "epcis": "serialine.tools.bench_epcis",
    "line": "serialine.tools.bench_line",
    "link": "serialine.tools.bench_link",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: serialine bench {{{'|'.join(BENCHES)}}} [ARGS...]", file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHES[argv[0]]).main(argv[1:]) or 0)
