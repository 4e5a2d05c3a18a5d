"""EPCIS 2.0 JSON-LD documents: the envelope around a list of events."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache

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


def envelope(created: datetime | None = None, audit_head: str | None = None) -> tuple[bytes, bytes]:
    """A document's bytes before and after its events: `head + b",".join(events) + tail` is
    `dumps(epcis_document(events, ...))`, written without holding the events."""
    text = dumps(epcis_document([], created, audit_head))
    head, found, tail = text.partition(b'"eventList":[]')
    assert found, "envelope: no empty eventList"
    return head + b'"eventList":[', b"]" + tail


class EventChecker:
    """The EPCIS 2.0 JSON Schema applied event by event, with the same strictness as the whole
    document (its eventList items are the schema's EPCIS-Document-Event, with no rule across
    items): the envelope once, then each event; errors name the event and the path in it."""

    def __init__(self, head: bytes, tail: bytes):
        from serialine.host.epcis import validate
        validate.json_document(json.loads(head + tail))
        validator = _memo_validator()
        self._event = validator.evolve(schema=validator.schema["definitions"]["EPCIS-Document-Event"])

    def check(self, event: dict, which: str) -> None:
        from serialine.host.epcis import validate
        errors = sorted(self._event.iter_errors(event), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [f"{which}: {'/'.join(map(str, e.absolute_path)) or '(event)'}: "
                     + (e.message if len(e.message) <= 200 else e.message[:200] + "…") for e in errors[:20]]
            raise validate.InvalidDocument("EPCIS 2.0 JSON Schema:\n" + "\n".join(lines))


MEMO = 20_000  # strings remembered valid (then forgotten at once: memory stays flat)


@lru_cache(maxsize=None)
def _memo_validator():
    """validate.py's Draft-07 validator (same schema, same FormatChecker) that remembers which
    string passed a `$ref` or an `anyOf` of the schema: the outcome is a function of the string
    and that subschema alone, and a batch repeats its property names, steps, dispositions and
    locations in every event. A string that fails is always checked again (its errors are
    reported as ever); `$ref` lookups are resolved once per schema location, and one that names
    only `type`/`format` is checked with those two directly."""
    from jsonschema import FormatChecker, validators
    from jsonschema import _keywords

    from serialine.host import standards
    from serialine.host.epcis import validate
    refs: dict = {}
    passed: set = set()

    def remembered(key, instance, errors):
        if key is not None and key in passed:
            return
        failed = False
        for error in errors():
            failed = True
            yield error
        if key is not None and not failed:
            if len(passed) >= MEMO:
                passed.clear()
            passed.add(key)

    def ref(validator, ref, instance, schema):
        where = (validator._resolver._base_uri, ref)
        hit = refs.get(where)
        if hit is None:
            resolved = validator._resolver.lookup(ref)
            leaf = isinstance(resolved.contents, dict) and set(resolved.contents) <= {"type", "format"}
            hit = refs[where] = (resolved.contents, resolved.resolver, leaf)
        if hit[2]:  # a type/format leaf (e.g. every EPC's "uri"): its two keywords, checked directly
            kinds, form = hit[0].get("type"), hit[0].get("format")
            if (kinds is None or any(validator.is_type(instance, k) for k in
                                     ([kinds] if isinstance(kinds, str) else kinds))) and \
                    (form is None or validator.format_checker.conforms(instance, form)):
                return  # valid; otherwise the errors come from the schema as ever, below
        key = ("$ref", where, instance) if isinstance(instance, str) else None
        yield from remembered(key, instance, lambda: validator.descend(instance, hit[0], resolver=hit[1]))

    def any_of(validator, alternatives, instance, schema):
        key = ("anyOf", id(alternatives), instance) if isinstance(instance, str) else None
        yield from remembered(key, instance, lambda: _keywords.anyOf(validator, alternatives, instance, schema))

    base = type(validate._json_validator())
    memo = validators.extend(base, {"$ref": ref, "anyOf": any_of})
    return memo(json.loads(standards.EPCIS_JSON_SCHEMA.read_text()), format_checker=FormatChecker())
