"""Directory sink, the embedded default: one EPCIS document per file, written atomically
(temporary file, fsync, rename, fsync of the directory), so a reader never sees half a file."""

from __future__ import annotations

import os
import re
from pathlib import Path

from serialine.host.epcis import document as doc
from serialine.host.epcis.sinks import SinkError


class DirectorySink:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def send(self, document: dict, name: str) -> None:
        """Write `document` as NAME.jsonld; the same name again replaces it (idempotent resend)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9._-]", "_", name)  # a batch id never becomes a path
            final = self.path / f"{name}.jsonld"
            tmp = self.path / f".{name}.jsonld.tmp"
            with open(tmp, "wb") as fh:
                fh.write(doc.dumps(document))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SinkError(f"directory {self.path}: {exc}") from exc

    def close(self) -> None:
        pass
