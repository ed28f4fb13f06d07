"""The slot aligner: each error kind on hand-made texts, the paraphrases it must accept, and its
error floor on the ViGGO test references (real data)."""

from __future__ import annotations

import pytest

from datatuner_core import ser, stage_reader
from datatuner_core.ingest import ingest


def _slots(**values: str) -> list[dict]:
    return [{"slot": k.replace("customer_rating", "customer rating"), "value": v}
            for k, v in values.items()]  # fmt: skip


E2E = _slots(name="The Eagle", eatType="coffee shop", area="riverside", familyFriendly="yes",
             customer_rating="5 out of 5", priceRange="less than £20")  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "The Eagle is a family-friendly coffee shop by the river with a five-star rating and "
        "meals under £20.",
        "Rated 5 out of 5 by customers, The Eagle is a cheap, kid friendly coffee shop in the "
        "riverside area.",
    ],
)
def test_e2e_paraphrases_are_found(text):
    found = ser.slot_errors(E2E, text)
    assert found["errors"] == [] and found["units"] == 6


def test_each_error_kind_is_counted():
    text = (
        "The Eagle is a coffee shop in the city centre. It is not family friendly, and the "
        "coffee shop has a 5 star rating. It is in the city centre, with Italian food."
    )
    found = ser.slot_errors(E2E, text)
    kinds = {(slot, kind) for slot, _, kind in found["errors"]}
    assert kinds == {
        ("area", "wrong"),  # city centre, not riverside
        ("familyFriendly", "wrong"),  # the opposite polarity
        ("priceRange", "missing"),
        ("food", "hallucinated"),  # the record has no food
    }
    twice = ser.slot_errors(_slots(name="X", area="riverside"),
                            "X is on the riverside. Yes, the riverside.")  # fmt: skip
    assert twice["repeated"] == 1
    assert ser.ser([(E2E, text)])["ser"] == pytest.approx(4 / 6)


def test_viggo_yes_no_slots_and_lists():
    slots = _slots(
        name="Tom Clancy's The Division", platforms="PlayStation, Xbox, PC",
        available_on_steam="no", has_multiplayer="no", has_linux_release="yes",
    )  # fmt: skip
    good = ("The Division is a single-player game for PS4, Xbox One and Windows. It isn't on "
            "Steam, but it runs on Linux.")  # fmt: skip
    assert ser.slot_errors(slots, good)["errors"] == []
    bad = "Tom Clancy's The Division is a multiplayer game on Steam for PlayStation."
    errors = {(s, v, k) for s, v, k in ser.slot_errors(slots, bad)["errors"]}
    assert errors == {("platforms", "Xbox", "missing"), ("platforms", "PC", "missing"),
                      ("available_on_steam", "no", "wrong"), ("has_multiplayer", "no", "wrong"),
                      ("has_linux_release", "yes", "missing")}  # fmt: skip
    asked = _slots(has_linux_release="")  # request_attribute: the topic must be named
    assert ser.slot_errors(asked, "Do you play games on Linux?")["errors"] == []
    assert ser.slot_errors(asked, "What do you play?")["missing"] == 1


def test_viggo_test_references_score_near_zero(shared_data, tmp_path):
    out = str(tmp_path / "viggo")
    ingest("viggo", str(shared_data / "viggo" / "viggo-test.csv"), out, split="test")
    rows = stage_reader.read_stage(out).to_pylist()
    found = ser.ser((r["data"]["slots"], ref) for r in rows for ref in r["references"])
    assert found["texts"] == 1083 and found["units"] == 4965
    assert found["ser"] < 0.03  # measured 2.1 % (the aligner's floor; the entity check: 14 %)
    metrics = ser.ser_metrics([{**r, "text": r["references"][0]} for r in rows])
    assert metrics["chosen"]["texts"] == 359 and metrics["references"]["texts"] == 1083


def test_a_generations_stage_gets_its_ser(shared_data, tmp_path):
    """Through the stage reader, as `datatuner evaluate` and the pipeline read a stage (a table,
    not rows): the slots reach the aligner and SER is in the metrics and the headline."""
    import pyarrow as pa

    from datatuner_core.evaluate import evaluate_generations, headline

    out = str(tmp_path / "viggo")
    ingest("viggo", str(shared_data / "viggo" / "viggo-test.csv"), out, split="test")
    table = stage_reader.read_stage(out)
    texts = [refs[0] for refs in table.column("references").to_pylist()]
    texts[0] = "A game."  # drops every slot of the first record
    table = table.append_column("text", pa.array(texts))
    metrics = evaluate_generations(table)
    assert metrics["ser"]["chosen"]["texts"] == 359
    assert metrics["ser"]["references"]["texts"] == 1083
    first = ser.slot_errors(table.column("data")[0].as_py()["slots"], "A game.")
    assert first["missing"] >= 2 and metrics["ser"]["chosen"]["missing"] >= first["missing"]
    assert headline(metrics)["ser"] == metrics["ser"]["chosen"]["ser"] > 0
