"""GS1's official artefacts, shipped unchanged with the agent so it validates offline at run time.

See README.md here for sources and licences. SHA256SUMS lists each file as copied from its
publisher; tests/test_foundation.py checks the package against it (and nothing outside the repo).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
GS1_SYNTAX_DICTIONARY = HERE / "gs1" / "gs1-syntax-dictionary.txt"
EPCIS_JSON_SCHEMA = HERE / "epcis" / "EPCIS-JSON-Schema.json"
EPCIS_CONTEXT = HERE / "epcis" / "epcis-context.jsonld"
EPCIS_XSD_20 = HERE / "epcis" / "xsd-2.0" / "EPCglobal-epcis-2_0.xsd"
EPCIS_XSD_12 = HERE / "epcis" / "xsd-1.2" / "EPCglobal-epcis-1_2.xsd"
CAPTURE_OPENAPI = HERE / "epcis" / "capture-openapi.yaml"
EXAMPLES = HERE / "epcis" / "examples"
