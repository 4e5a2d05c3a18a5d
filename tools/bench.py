"""`serialine bench NAME`: each benchmark prints its figures and, as its last line, one JSON object."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "protocol": "serialine.tools.bench_protocol",
    "firmware": "serialine.tools.bench_firmware",
    "host": "serialine.tools.bench_host",
    "batch": "serialine.tools.bench_batch",
    "serials": "serialine.tools.bench_serials",
    "epcis": "serialine.tools.bench_epcis",
    "line": "serialine.tools.bench_line",
    "link": "serialine.tools.bench_link",
    "verify": "serialine.tools.bench_verify",
    "opcua": "serialine.tools.bench_opcua",
}


def main(argv: list[str]) -> int:
    usage = f"usage: serialine bench {{{'|'.join(BENCHES)}}} [ARGS...]"
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not argv or argv[0] not in BENCHES:
        print(usage, file=sys.stderr)
        return 2
    mod = importlib.import_module(BENCHES[argv[0]])
    if {"-h", "--help"} & set(argv[1:]) and not hasattr(mod, "argparse"):
        # a benchmark reading its argv by hand would run: its docstring is its help
        print((mod.__doc__ or usage).strip())
        return 0
    return int(mod.main(argv[1:]) or 0)
