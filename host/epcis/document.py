"""EPCIS 2.0 JSON-LD documents: the envelope around a list of events."""

from __future__ import annotations

import json
import re
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
    items): the envelope once, then each event; errors name the event and the path in it.

    A batch's events differ only in a few top-level values (`VARYING`: time, ID, EPCs), so the
    outcome is learnt per template (the event with those values blanked): the first event of a
    template is validated in full, noting each subschema the validation applied to a varying
    value and its outcome; a later event of that template is valid when its varying values give
    the same outcome under each of those subschemas (the validation would take the same path:
    at the event's own level the schema only combines its properties' outcomes, which
    `_template_safe` checks). Anything else is validated in full again."""

    TEMPLATES = 1000  # templates remembered (a batch has a handful)

    def __init__(self, head: bytes, tail: bytes):
        from serialine.host.epcis import validate
        validate.json_document(json.loads(head + tail))
        validator = _memo_validator()
        schema = validator.schema["definitions"]["EPCIS-Document-Event"]
        self._event = validator.evolve(schema=schema)
        self._templates: dict[str, list] | None = {} if _template_safe(validator.schema, schema) else None

    def check(self, event: dict, which: str) -> None:
        from serialine.host.epcis import validate
        key = _template(event) if self._templates is not None else None
        seen = self._templates.get(key) if key is not None else None
        if seen is not None and all((next(v.descend(event[k], s, path=k, resolver=r), None) is None) == ok
                                    for k, s, v, r, ok in seen):
            return
        applied: list = []
        _RECORDING.append((event, applied))
        try:
            errors = sorted(self._event.iter_errors(event), key=lambda e: list(e.absolute_path))
        finally:
            _RECORDING.pop()
        if errors:
            lines = [f"{which}: {'/'.join(map(str, e.absolute_path)) or '(event)'}: "
                     + (e.message if len(e.message) <= 200 else e.message[:200] + "…") for e in errors[:20]]
            raise validate.InvalidDocument("EPCIS 2.0 JSON Schema:\n" + "\n".join(lines))
        if key is not None and len(self._templates) < self.TEMPLATES:
            self._templates[key] = applied


VARYING = ("eventTime", "eventID", "epcList", "childEPCs", "parentID")
_RECORDING: list = []  # (event, [(key, subschema, validator, resolver, valid)]) of the full validation running
# keywords that, at an event's own level, only combine its properties' outcomes (or read its keys)
_EVENT_LEVEL = {"type", "properties", "required", "propertyNames", "allOf", "anyOf", "oneOf", "if", "then",
                "else", "not", "$ref", "additionalProperties", "patternProperties", "minProperties",
                "maxProperties", "dependencies", "description", "title", "$comment", "$id", "$schema",
                "examples", "default", "definitions"}


def _template(event: dict) -> str | None:
    if not isinstance(event, dict):
        return None
    return json.dumps({k: (None if k in VARYING else v) for k, v in event.items()}, sort_keys=True)


def _template_safe(root: dict, schema: dict) -> bool:
    """Every subschema applied at an event's own level uses only `_EVENT_LEVEL` keywords."""
    seen, todo = set(), [schema]
    while todo:
        s = todo.pop()
        if not isinstance(s, dict) or id(s) in seen:
            continue
        seen.add(id(s))
        if set(s) - _EVENT_LEVEL:
            return False
        if "$ref" in s:
            if not s["$ref"].startswith("#/"):
                return False
            target = root
            for part in s["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~").replace("%40", "@")]
            todo.append(target)
        for k in ("allOf", "anyOf", "oneOf"):
            todo.extend(s.get(k) or ())
        todo.extend(s[k] for k in ("if", "then", "else", "not") if k in s)
        todo.extend(v for v in (s.get("dependencies") or {}).values() if isinstance(v, dict))
    return True


MEMO = 20_000  # strings remembered valid (then forgotten at once: memory stays flat)

# RFC 3986 URIs without "/", "?", "#" or "%" (scheme ":" path-rootless): the EPC, SGLN and SSCC
# URNs of an event. A string it matches is a URI; one it does not gets the full "uri" format check.
FAST_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9._~!$&'()*+,;=:@-]+")


@lru_cache(maxsize=None)
def _memo_validator():
    """validate.py's Draft-07 validator (same schema, same FormatChecker) that remembers which
    string passed a `$ref` or an `anyOf` of the schema: the outcome is a function of the string
    and that subschema alone, and a batch repeats its property names, steps, dispositions and
    locations in every event. A string that fails is always checked again (its errors are
    reported as ever); `$ref` lookups are resolved once per schema location, and one that names
    only `type`/`format` is checked with those two directly, also for each item of an array
    (a commissioning event's EPCs) without a descent per item; a URN the `FAST_URI` grammar
    takes needs no full URI parse, and an array of strings is unique by a set."""
    from jsonschema import FormatChecker, validators
    from jsonschema import _keywords, _legacy_keywords

    from serialine.host import standards
    from serialine.host.epcis import validate
    refs: dict = {}
    passed: set = set()
    fast_uri = FAST_URI.fullmatch

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

    def resolve(validator, ref):
        where = (validator._resolver._base_uri, ref)
        hit = refs.get(where)
        if hit is None:
            resolved = validator._resolver.lookup(ref)
            leaf = isinstance(resolved.contents, dict) and set(resolved.contents) <= {"type", "format"}
            hit = refs[where] = (resolved.contents, resolved.resolver, leaf, where)
        return hit

    def leaf_ok(validator, instance, leaf: dict) -> bool:
        kinds, form = leaf.get("type"), leaf.get("format")
        if kinds == "string":
            if not isinstance(instance, str):
                return False
        elif kinds is not None and not any(validator.is_type(instance, k) for k in
                                           ([kinds] if isinstance(kinds, str) else kinds)):
            return False
        return form is None or validator.format_checker.conforms(instance, form)

    def ref(validator, ref, instance, schema):
        hit = resolve(validator, ref)
        if hit[2] and leaf_ok(validator, instance, hit[0]):  # a type/format leaf (e.g. every EPC's "uri")
            return  # valid; otherwise the errors come from the schema as ever, below
        key = ("$ref", hit[3], instance) if isinstance(instance, str) else None
        yield from remembered(key, instance, lambda: validator.descend(instance, hit[0], resolver=hit[1]))

    def items(validator, items, instance, schema):
        if isinstance(items, dict) and set(items) == {"$ref"} and isinstance(instance, list):
            hit = resolve(validator, items["$ref"])
            if hit[2]:
                uri = hit[0] == {"type": "string", "format": "uri"}
                for index, item in enumerate(instance):
                    if not (uri and type(item) is str and fast_uri(item)) and not leaf_ok(validator, item, hit[0]):
                        yield from validator.descend(item, items, path=index)
                return
        yield from _legacy_keywords.items_draft6_draft7_draft201909(validator, items, instance, schema)

    def unique(validator, unique_items, instance, schema):
        if unique_items and isinstance(instance, list) and all(isinstance(i, str) for i in instance):
            if len(set(instance)) != len(instance):
                yield from _keywords.uniqueItems(validator, unique_items, instance, schema)
            return
        yield from _keywords.uniqueItems(validator, unique_items, instance, schema)

    def any_of(validator, alternatives, instance, schema):
        key = ("anyOf", id(alternatives), instance) if isinstance(instance, str) else None
        yield from remembered(key, instance, lambda: _keywords.anyOf(validator, alternatives, instance, schema))

    formats = FormatChecker()
    full_uri, raises = formats.checkers["uri"]
    formats.checkers["uri"] = (lambda s: (isinstance(s, str) and FAST_URI.fullmatch(s) is not None) or full_uri(s),
                               raises)
    base = type(validate._json_validator())
    memo = validators.extend(base, {"$ref": ref, "anyOf": any_of, "items": items, "uniqueItems": unique})
    plain_descend = memo.descend

    def descend(self, instance, schema, path=None, schema_path=None, resolver=None):
        if _RECORDING and path in VARYING and _RECORDING[-1][0].get(path) is instance:
            errors = list(plain_descend(self, instance, schema, path, schema_path, resolver))
            _RECORDING[-1][1].append((path, schema, self, resolver, not errors))
            yield from errors
            return
        yield from plain_descend(self, instance, schema, path, schema_path, resolver)

    memo.descend = descend
    return memo(json.loads(standards.EPCIS_JSON_SCHEMA.read_text()), format_checker=formats)
