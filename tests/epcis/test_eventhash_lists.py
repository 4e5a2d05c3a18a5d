"""An EPC list's pre-hash items (eventhash._epc_items: an SGTIN's head matched once per list) are
exactly what each EPC gives on its own (`_canonical_value`), for well-formed and odd SGTINs alike."""

from hypothesis import given, settings, strategies as st

from serialine.host.epcis import eventhash

_digits = st.text("0123456789", min_size=0, max_size=14)
_serial = st.text(st.sampled_from(list("AZaz09!()*+,:.-_%\n \t") + ["\u0663", "é"]), min_size=0, max_size=64)
_head = st.sampled_from(["urn:epc:id:sgtin:", "urn:epc:id:sgtin:0614141.", "urn:epc:id:sscc:", " urn:epc:id:sgtin:",
                         "urn:epc:id:sgln:"])
_sgtin = st.builds(lambda head, p, i, s: f"{head}{p}.{i}.{s}", _head, _digits, _digits, _serial)
_epc = st.one_of(_sgtin, st.builds(lambda p, s: f"urn:epc:id:sgtin:0614141.{p}.{s}", _digits, _serial),
                 st.text(max_size=40))


@settings(max_examples=400, deadline=None)
@given(st.lists(_epc, max_size=8))
def test_a_lists_items_are_each_epcs_own(values):
    assert eventhash._epc_items(values) == [f"epc={eventhash._canonical_value(v)}" for v in values]


def test_a_batchs_sgtins_share_one_head():
    values = [f"urn:epc:id:sgtin:0614141.812345.{s}" for s in ("A1", "B(2)", "3.4", "x" * 60, "x" * 61, "a\nb")]
    assert eventhash._epc_items(values) == [f"epc={eventhash._canonical_value(v)}" for v in values]
    assert eventhash._epc_items(values)[0] == "epc=https://id.gs1.org/01/80614141123458/21/A1"
