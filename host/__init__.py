"""The host agent (CPython): serials, codes, verdicts, aggregation, ledger, EPCIS, and the
line engineer's `serialine` command."""
