"""The print-quality trend (host/trend.py) on synthetic grade sequences: deterministic, no line."""

import pytest

from serialine.host import trend
from serialine.host.trend import Trend


def feed(t: Trend, grades, name="modulation"):
    """Feed letters; returns [(read index from 1, alarm detail)]."""
    out = []
    for i, g in enumerate(grades, 1):
        out += [(i, why) for why in t.add({name: g})]
    return out


def test_a_steady_line_never_alarms():
    t = Trend(window=200, min_grade=1.5)
    assert feed(t, "A" * 1000) == []
    assert feed(t, "AB" * 500) == []  # a steady mix is no drift
    st = t.status()["parameters"]["modulation"]
    assert st["grade"] == "B" and st["n"] == 200 and not st["drifting"]


def test_modulation_falling_from_b_to_c_alarms_before_a_pack_fails():
    # B for 300 reads, then one more C in every ten reads, then all C: never below the minimum (C)
    seq = "B" * 300 + "".join("C" * k + "B" * (10 - k) for k in range(1, 10) for _ in range(20)) + "C" * 400
    t = Trend(window=200, min_grade=1.5)
    alarms = feed(t, seq)
    assert len(alarms) == 1  # once per episode
    at, why = alarms[0]
    assert 300 < at < 300 + 1800  # while the fall is under way, before the line prints only C
    assert why.startswith("print quality drifting: clean the printhead: modulation")
    assert "from B" in why or "within 0.5 of the minimum C" in why
    assert "D" not in seq and "F" not in seq  # so every pack passed: the alarm came first
    assert t.status()["drifting"] == ["modulation"]


def test_a_fall_of_one_grade_from_the_best_alarms_even_far_above_the_minimum():
    t = Trend(window=50, min_grade=0.5)
    alarms = feed(t, "A" * 100 + "B" * 100)
    assert [at for at, _ in alarms] == [150]  # the window's mean reaches B (a full grade down) at its 50th B
    assert "fell from A (3.50) to B (2.50)" in alarms[0][1]


def test_an_episode_ends_when_the_print_recovers_and_a_new_one_alarms_again():
    t = Trend(window=20, min_grade=0.5)
    first = feed(t, "A" * 40 + "B" * 40)
    assert len(first) == 1
    assert feed(t, "A" * 40) == []  # cleaned: back within half a grade of the best
    assert not t.status()["parameters"]["modulation"]["drifting"]
    again = feed(t, "B" * 40)
    assert len(again) == 1


def test_no_reads_are_no_samples_and_each_parameter_has_its_own_series():
    t = Trend(window=10, min_grade=1.5)
    for _ in range(30):
        assert t.add({"overall": None, "modulation": "A", "symbol_contrast": ""}) == []
    st = t.status()
    assert list(st["parameters"]) == ["modulation"] and st["reads"] == 30
    alarms = feed(t, "C" * 10, name="symbol_contrast")  # a new series: judged once its window is full
    assert len(alarms) == 1 and "symbol contrast" in alarms[0][1] and alarms[0][0] == 10


def test_numeric_grades_and_reset():
    t = Trend(window=10, min_grade="C")  # as the line file gives it
    assert t.min_grade == 1.5
    assert feed(t, [3.5] * 10 + [2.4] * 10) != []
    t.reset()
    assert t.status() == {"window": 10, "reads": 0, "drifting": [], "parameters": {}}
    with pytest.raises(ValueError):
        t.add({"overall": "Q"})
    with pytest.raises(ValueError):
        Trend(window=1)


def test_the_alarm_kind_and_advice_are_one_name_each():
    assert trend.ALARM == "PRINT_QUALITY_DRIFT"
    assert trend.ADVICE == "print quality drifting: clean the printhead"


def test_serialine_tune_shows_the_trend_and_its_alarm():
    from rich.console import Console

    from serialine.host import tune

    t = Trend(window=10, min_grade="C")
    feed(t, "A" * 10 + "C" * 10, name="overall")
    status = {"line_id": "L1", "batch": "B1", "speed_mm_s": 100.0, "verdict_latency_ms": {}, "budget_ms": 20.0,
              "print_quality": t.status()}
    fig = {"gate_window_mm": 5.0, "units": [], "confirm_window_mm": 10.0, "rejects_by_reason": {},
           "gate_error_max_mm": None, "outside_window": 0}
    con = Console(width=120, record=True)
    con.print(tune.render(status, fig))
    text = con.export_text()
    assert "print quality, last 10 reads: overall C (1.50)" in text
    assert "print quality drifting (overall): clean the printhead" in text
