"""EPCIS 2.0 JSON-LD documents: the envelope around a list of events."""

from __future__ import annotations

import json
from datetime import datetime, timezone

CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"


def epcis_document(events: list[dict], created: datetime | None = None) -> dict:
    created = created or datetime.now(timezone.utc)
    return {
        "@context": [CONTEXT_URL],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": created.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "epcisBody": {"eventList": list(events)},
    }


def dumps(document: dict) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
