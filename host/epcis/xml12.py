"""EPCIS 1.2 XML for DSCSA trading partners (GS1 US guideline): the same events as the 2.0
JSON-LD ones, with CBV 1.2 URNs for bizStep/disposition, the eventID in `baseExtension`, ILMD
inside the ObjectEvent's `<extension>` as the 1.2 schema requires, and a Standard Business
Document Header naming sender and receiver."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from lxml import etree

from serialine.host.epcis.eventhash import PREFIXES

EPCIS_NS = "urn:epcglobal:epcis:xsd:1"
SBDH_NS = "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"
CBVMDA_NS = PREFIXES["cbvmda"]  # the IRI the JSON-LD context gives cbvmda: both renderings hash alike
NSMAP = {"epcis": EPCIS_NS, "sbdh": SBDH_NS, "cbvmda": CBVMDA_NS}


def _sub(parent, tag: str, text: str | None = None, **attrs):
    element = etree.SubElement(parent, tag, **attrs)
    if text is not None:
        element.text = text
    return element


def _sbdh(parent, sender: str, receiver: str, created: str) -> None:
    header = _sub(parent, f"{{{SBDH_NS}}}StandardBusinessDocumentHeader")
    _sub(header, f"{{{SBDH_NS}}}HeaderVersion", "1.0")
    for role, ident in (("Sender", sender), ("Receiver", receiver)):
        partner = _sub(header, f"{{{SBDH_NS}}}{role}")
        _sub(partner, f"{{{SBDH_NS}}}Identifier", ident, Authority="SGLN")
    ident = _sub(header, f"{{{SBDH_NS}}}DocumentIdentification")
    _sub(ident, f"{{{SBDH_NS}}}Standard", "EPCglobal")
    _sub(ident, f"{{{SBDH_NS}}}TypeVersion", "1.0")
    _sub(ident, f"{{{SBDH_NS}}}InstanceIdentifier", str(uuid.uuid4()))
    _sub(ident, f"{{{SBDH_NS}}}Type", "Events")
    _sub(ident, f"{{{SBDH_NS}}}CreationDateAndTime", created)


def _event(parent, event: dict) -> None:
    kind = event["type"]
    if kind not in ("ObjectEvent", "AggregationEvent"):
        raise ValueError(f"EPCIS 1.2 export: unsupported event type {kind!r}")
    el = _sub(parent, kind)
    _sub(el, "eventTime", event["eventTime"])
    _sub(el, "eventTimeZoneOffset", event["eventTimeZoneOffset"])
    _sub(_sub(el, "baseExtension"), "eventID", event["eventID"])
    if kind == "AggregationEvent":
        _sub(el, "parentID", event["parentID"])
    epcs = _sub(el, "epcList" if kind == "ObjectEvent" else "childEPCs")
    for epc in event["epcList" if kind == "ObjectEvent" else "childEPCs"]:
        _sub(epcs, "epc", epc)
    _sub(el, "action", event["action"])
    _sub(el, "bizStep", f"urn:epcglobal:cbv:bizstep:{event['bizStep']}")
    _sub(el, "disposition", f"urn:epcglobal:cbv:disp:{event['disposition']}")
    _sub(_sub(el, "readPoint"), "id", event["readPoint"]["id"])
    _sub(_sub(el, "bizLocation"), "id", event["bizLocation"]["id"])
    if event.get("ilmd"):
        ilmd = _sub(_sub(el, "extension"), "ilmd")
        for key, value in event["ilmd"].items():
            prefix, _, name = key.partition(":")
            if prefix not in PREFIXES or not name:
                raise ValueError(f"EPCIS 1.2 export: unsupported ILMD attribute {key!r}")
            _sub(ilmd, f"{{{PREFIXES[prefix]}}}{name}", str(value))


def document(events: list[dict], sender: str, receiver: str,
             created: datetime | None = None) -> bytes:
    """One EPCIS 1.2 document with SBDH; sender/receiver are SGLN URIs of the trading partners."""
    stamp = (created or datetime.now(timezone.utc)).astimezone(timezone.utc) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")
    root = etree.Element(f"{{{EPCIS_NS}}}EPCISDocument", nsmap=NSMAP, schemaVersion="1.2",
                         creationDate=stamp)
    _sbdh(_sub(root, "EPCISHeader"), sender, receiver, stamp)
    event_list = _sub(_sub(root, "EPCISBody"), "EventList")
    for event in events:
        _event(event_list, event)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
