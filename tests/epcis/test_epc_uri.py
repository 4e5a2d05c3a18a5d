"""SGTIN EPC URIs: the batch-level fast path (GTIN checked once, serials without escapes joined
as they are) gives exactly the TDS form, and a bad key is refused every time, cached or not."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serialine.host.epcis import events as ev

CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
GTIN = "09506000134352"


def tds_sgtin(gtin: str, serial: str, n: int) -> str:
    escaped = "".join(f"%{ord(c):02X}" if c in '"%&/<>?' else c for c in serial)
    return f"urn:epc:id:sgtin:{gtin[1:1 + n]}.{gtin[0]}{gtin[1 + n:13]}.{escaped}"


@given(st.text(alphabet=CSET82, min_size=1, max_size=20), st.integers(6, 12))
def test_sgtin_is_the_tds_form(serial, n):
    assert ev.sgtin_urn(GTIN, serial, n) == tds_sgtin(GTIN, serial, n)


@pytest.mark.parametrize("gtin, serial, n", [
    ("09506000134353", "1", 7),  # wrong check digit
    (GTIN, "", 7), (GTIN, "x" * 21, 7), (GTIN, "ä", 7), (GTIN, "a b", 7), (GTIN, 12, 7),
    (GTIN, "1", 5), (GTIN, "1", 13),
])
def test_bad_keys_are_refused_every_time(gtin, serial, n):
    for _ in range(2):  # the second call meets the cached GTIN part
        with pytest.raises(ValueError):
            ev.sgtin_urn(gtin, serial, n)
