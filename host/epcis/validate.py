"""Validation against GS1's official schemas, offline: the EPCIS 2.0 JSON Schema (draft-07,
with a FormatChecker so bad times and URIs are caught) and the 1.2 / 2.0 XSDs via lxml, all
loaded from the copies shipped in `serialine.host.standards`."""

from __future__ import annotations

import json
from functools import lru_cache

from jsonschema import Draft7Validator, FormatChecker

from serialine.host import standards


class InvalidDocument(ValueError):
    """A document that the official schema rejects; the message lists every problem."""


@lru_cache(maxsize=None)
def _json_validator() -> Draft7Validator:
    schema = json.loads(standards.EPCIS_JSON_SCHEMA.read_text())
    return Draft7Validator(schema, format_checker=FormatChecker())


def json_document(document: dict) -> None:
    errors = sorted(_json_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}" for e in errors[:20]]
        raise InvalidDocument("EPCIS 2.0 JSON Schema:\n" + "\n".join(lines))


@lru_cache(maxsize=None)
def _xsd(version: str):
    from lxml import etree  # imported here: only XML users pay for lxml
    path = standards.EPCIS_XSD_12 if version == "1.2" else standards.EPCIS_XSD_20
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(path), parser))


def xml_document(data: bytes, version: str = "1.2") -> None:
    from lxml import etree
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidDocument(f"not well-formed XML: {exc}") from exc
    schema = _xsd(version)
    if not schema.validate(root):
        lines = [f"line {e.line}: {e.message}" for e in list(schema.error_log)[:20]]
        raise InvalidDocument(f"EPCIS {version} XSD:\n" + "\n".join(lines))
