"""EPCIS 1.2 XML for DSCSA trading partners (GS1 US guideline): the same events as the 2.0
JSON-LD ones, with CBV 1.2 URNs for bizStep/disposition, the eventID in `baseExtension`, ILMD
inside the ObjectEvent's `<extension>` as the 1.2 schema requires, and a Standard Business
Document Header naming sender and receiver."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from lxml import etree

from serialine.host.epcis.eventhash import PREFIXES
from serialine.host.masterdata import sgln

EPCIS_NS = "urn:epcglobal:epcis:xsd:1"
SBDH_NS = "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"
CBVMDA_NS = PREFIXES["cbvmda"]  # the IRI the JSON-LD context gives cbvmda: both renderings hash alike
NSMAP = {"epcis": EPCIS_NS, "sbdh": SBDH_NS, "cbvmda": CBVMDA_NS}
EPC_CLASS = "urn:epcglobal:epcis:vtype:EPCClass"
LOCATION = "urn:epcglobal:epcis:vtype:Location"
MDA = "urn:epcglobal:cbv:mda#"


def _sub(parent, tag: str, text: str | None = None, **attrs):
    element = etree.SubElement(parent, tag, **attrs)
    if text is not None:
        element.text = text
    return element


def _sbdh(parent, sender: str, receiver: str, created: str) -> None:
    for role, ident in (("sender", sender), ("receiver", receiver)):
        if not isinstance(ident, str) or not ident.startswith("urn:epc:id:sgln:"):
            raise ValueError(f"EPCIS 1.2 export: the SBDH {role} must be an SGLN URN, got {ident!r}")
        sgln(ident)  # its digits too
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


def _extension(el):
    """The event's <extension>, made on first use (sourceList/destinationList, then ilmd)."""
    found = el.find("extension")
    return found if found is not None else _sub(el, "extension")


def _shipping_lists(el, event: dict) -> None:
    """bizTransactionList after bizLocation; sourceList / destinationList in <extension> (1.2)."""
    if event.get("bizTransactionList"):
        biz = _sub(el, "bizTransactionList")
        for item in event["bizTransactionList"]:
            _sub(biz, "bizTransaction", item["bizTransaction"], type=_cbv12("btt", item["type"]))
    for name, key in (("sourceList", "source"), ("destinationList", "destination")):
        if event.get(name):
            group = _sub(_extension(el), name)
            for item in event[name]:
                _sub(group, key, item[key], type=_cbv12("sdt", item["type"]))


def _cbv12(vocabulary: str, value: str) -> str:
    """A CBV 2.0 short name as its CBV 1.2 URN (a URI stays as it is)."""
    return value if ":" in value else f"urn:epcglobal:cbv:{vocabulary}:{value}"


def event_xml(event: dict) -> bytes:
    """One event's element, standalone (it declares the ILMD namespaces it uses itself)."""
    kind = event["type"]
    if kind not in ("ObjectEvent", "AggregationEvent"):
        raise ValueError(f"EPCIS 1.2 export: unsupported event type {kind!r}")
    used = {key.partition(":")[0] for key in event.get("ilmd") or ()}
    el = etree.Element(kind, nsmap={p: PREFIXES[p] for p in sorted(used) if p in PREFIXES} or None)
    _fill(el, event)
    return etree.tostring(el, encoding="UTF-8", pretty_print=True)


def _fill(el, event: dict) -> None:
    kind = event["type"]
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
    _shipping_lists(el, event)
    if event.get("ilmd"):
        ilmd = _sub(_extension(el), "ilmd")
        for key, value in event["ilmd"].items():
            prefix, _, name = key.partition(":")
            if prefix not in PREFIXES or not name:
                raise ValueError(f"EPCIS 1.2 export: unsupported ILMD attribute {key!r}")
            _sub(ilmd, f"{{{PREFIXES[prefix]}}}{name}", str(value))


def epc_class(pattern: str, *, name: str, ndc: str, manufacturer: str, dosage_form: str,
              strength: str, net_content: str) -> tuple[str, str, list[tuple[str, str]]]:
    """A product's EPCClass vocabulary element as the GS1 US DSCSA guideline has it (NDC as
    additionalTradeItemIdentification of type FDA_NDC_11)."""
    return (EPC_CLASS, pattern, [
        (MDA + "additionalTradeItemIdentification", ndc),
        (MDA + "additionalTradeItemIdentificationTypeCode", "FDA_NDC_11"),
        (MDA + "regulatedProductName", name),
        (MDA + "manufacturerOfTradeItemPartyName", manufacturer),
        (MDA + "dosageFormType", dosage_form),
        (MDA + "strengthDescription", strength),
        (MDA + "netContentDescription", net_content)])


def location(sgln: str, *, name: str, street: str | None = None, city: str | None = None,
             state: str | None = None, postal: str | None = None,
             country: str | None = None) -> tuple[str, str, list[tuple[str, str]]]:
    """A location's vocabulary element (name and address; absent parts left out)."""
    parts = (("name", name), ("streetAddressOne", street), ("city", city), ("state", state),
             ("postalCode", postal), ("countryCode", country))
    return (LOCATION, sgln, [(MDA + k, v) for k, v in parts if v])


def _master_data(header, elements) -> None:
    """EPCISHeader/extension/EPCISMasterData: one Vocabulary per type, in the order given."""
    by_type: dict[str, list] = {}
    for vtype, element_id, attributes in elements:
        by_type.setdefault(vtype, []).append((element_id, attributes))
    vocabularies = _sub(_sub(_sub(header, "extension"), "EPCISMasterData"), "VocabularyList")
    for vtype, items in by_type.items():
        element_list = _sub(_sub(vocabularies, "Vocabulary", type=vtype), "VocabularyElementList")
        for element_id, attributes in items:
            element = _sub(element_list, "VocabularyElement", id=element_id)
            for attr_id, value in attributes:
                _sub(element, "attribute", str(value), id=attr_id)


def envelope(sender: str, receiver: str, created: datetime | None = None,
             master_data=()) -> tuple[bytes, bytes]:
    """A 1.2 document's bytes before and after its events (`event_xml`), with SBDH (sender and
    receiver: SGLN URIs of the trading partners; each call a new InstanceIdentifier) and
    `master_data`: vocabulary elements (`epc_class`, `location`) for the header."""
    stamp = (created or datetime.now(timezone.utc)).astimezone(timezone.utc) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")
    root = etree.Element(f"{{{EPCIS_NS}}}EPCISDocument", nsmap=NSMAP, schemaVersion="1.2",
                         creationDate=stamp)
    header = _sub(root, "EPCISHeader")
    _sbdh(header, sender, receiver, stamp)
    if master_data:
        _master_data(header, master_data)
    _sub(_sub(root, "EPCISBody"), "EventList").append(etree.Comment(_EVENTS))
    text = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    head, found, tail = text.partition(f"<!--{_EVENTS}-->".encode())
    assert found, "envelope: no event placeholder"
    return head.rstrip(b" "), tail.lstrip(b"\n")


_EVENTS = "events"


def document(events: list[dict], sender: str, receiver: str,
             created: datetime | None = None, master_data=()) -> bytes:
    """One EPCIS 1.2 document with SBDH holding `events` (see `envelope`)."""
    head, tail = envelope(sender, receiver, created, master_data)
    return head + b"".join(event_xml(event) for event in events) + tail


def check_file(path) -> None:
    """The 1.2 XSD over a document file, streamed (events dropped once validated): memory does
    not grow with the document. InvalidDocument as validate.xml_document says it."""
    from serialine.host.epcis import validate
    schema = validate._xsd("1.2")
    try:
        for _, el in etree.iterparse(str(path), events=("end",), schema=schema, no_network=True,
                                     resolve_entities=False, huge_tree=True):
            parent = el.getparent()
            if parent is not None and parent.tag == "EventList":
                el.clear()
                while el.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as exc:
        lines = [f"line {e.line}: {e.message}" for e in list(exc.error_log)[:20]] or [str(exc)]
        raise validate.InvalidDocument("EPCIS 1.2 XSD:\n" + "\n".join(dict.fromkeys(lines))) from None
