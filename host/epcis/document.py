"""EPCIS 2.0 JSON-LD documents: the envelope around a list of events."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from serialine.host.epcis.eventhash import PREFIXES

CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# Document-level extension (a prefixed term: GS1's JSON Schema allows any URI-named field): the
# sender's audit chain head "SEQ:HASH" when the document was made (host/audit.py anchors).
EXTENSION_PREFIX = {"serialine": "urn:serialine:"}
AUDIT_HEAD = "serialine:auditHead"


def epcis_document(events: list[dict], created: datetime | None = None, audit_head: str | None = None) -> dict:
    created = created or datetime.now(timezone.utc)
    document = {
        # the prefixes declared inline too: a receiver expands them without fetching the context,
        # and the event hash (eventhash.PREFIXES) is the one it then computes
        "@context": [CONTEXT_URL, dict(PREFIXES)],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": created.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "epcisBody": {"eventList": list(events)},
    }
    if audit_head is not None:
        document["@context"].append(dict(EXTENSION_PREFIX))
        document[AUDIT_HEAD] = audit_head
    return document


def dumps(document: dict) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
