"""`serialine agent run|check`: the host agent as a service for one line (host/service.py), and the
offline check of its line file (host/linefile.py).

    serialine agent run --config line.toml [--batch B] [--log-time] [--debug]
    serialine agent check --config line.toml

Exit status of `run`: 0 after SIGTERM (the line stopped in order), 1 an expected refusal (said in
one line: a bad line file, a batch not running, a configuration the device refused, ...), 2 usage."""

from __future__ import annotations

import argparse
import logging
import sys

USAGE = "usage: serialine agent run --config FILE [--batch B] | serialine agent check --config FILE\n"


def run_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="serialine agent run",
                                description="run the host agent for the line a line file describes")
    p.add_argument("--config", required=True, metavar="FILE", help="the line file (line.toml)")
    p.add_argument("--batch", metavar="B", help="run this batch (created and started with serialine batch);"
                   " without it the agent waits for one selected through its control interface")
    p.add_argument("--log-time", action="store_true", help="put the time on each log line (default: on a terminal)")
    p.add_argument("--debug", action="store_true", help="log more (each reconnect attempt, ...)")
    args = p.parse_args(argv)

    from serialine.host import service
    service.setup_logging(True if args.log_time else None, logging.DEBUG if args.debug else logging.INFO)
    from serialine.host import linefile
    try:
        cfg = linefile.load(args.config)
    except (linefile.LineFileError, OSError) as exc:
        service.log.error("%s", service._first_line(exc))
        return 1
    return service.run(cfg, args.batch)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    sub, rest = argv[0], argv[1:]
    if sub == "run":
        return run_main(rest)
    if sub == "check":
        from serialine.host import linefile
        return int(linefile.check_main(rest) or 0)
    print(f"serialine agent: unknown subcommand {sub!r}\n{USAGE}", end="", file=sys.stderr)
    return 2
