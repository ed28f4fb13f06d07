"""Sentence splitting (datatuner_core.sentences): abbreviations, initials, decimals, quotes."""

from __future__ import annotations

import pytest

from datatuner_core.sentences import split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Alan Bean was born in 1932. He died in 2018.",
            ["Alan Bean was born in 1932.", "He died in 2018."],
        ),
        (
            "Dr. Smith lives in St. Louis. He is a pilot.",
            ["Dr. Smith lives in St. Louis.", "He is a pilot."],
        ),
        (
            "J. R. R. Tolkien wrote it. It is 3.5 km long.",
            ["J. R. R. Tolkien wrote it.", "It is 3.5 km long."],
        ),
        (
            "It was written by J. K. Rowling. She is British.",
            ["It was written by J. K. Rowling.", "She is British."],
        ),
        (
            "It serves the U.S. Navy. The U.S. is large.",
            ["It serves the U.S. Navy.", "The U.S. is large."],
        ),
        ("He moved to the U.S. He stayed there.", ["He moved to the U.S.", "He stayed there."]),
        (
            "The club plays at No. 5 Road. It is old!",
            ["The club plays at No. 5 Road.", "It is old!"],
        ),
        ("Is it open? Yes. It is.", ["Is it open?", "Yes.", "It is."]),
        ("The runway is 3.5 km long", ["The runway is 3.5 km long"]),
        (
            "He was born in Washington, D.C. The city is big.",
            ["He was born in Washington, D.C.", "The city is big."],
        ),
        (
            "The A-Rosa (e.g. Luna) sails. it is large.",
            ["The A-Rosa (e.g. Luna) sails. it is large."],
        ),
        ('He said "Hi." She left.', ['He said "Hi."', "She left."]),
        ("  Two   spaces.\nNew line.  ", ["Two spaces.", "New line."]),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected
