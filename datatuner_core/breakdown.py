"""BLEU broken down by WebNLG's seen/unseen categories, by category and by input size."""

from __future__ import annotations

from collections.abc import Iterable

from .bleu import CorpusScorer

WEBNLG_SEEN = (
    "Airport",
    "Astronaut",
    "Building",
    "City",
    "ComicsCharacter",
    "Food",
    "Monument",
    "SportsTeam",
    "University",
    "WrittenWork",
)
WEBNLG_UNSEEN = ("Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician")


def is_webnlg(categories: Iterable[str | None]) -> bool:
    """Whether the categories are WebNLG's (at least one, and none outside its fifteen)."""
    present = {c for c in categories if c is not None}
    return bool(present) and present <= set(WEBNLG_SEEN + WEBNLG_UNSEEN)


def bleu_breakdown(
    rows: list[dict], scorer: CorpusScorer, chosen: dict, top: dict | None, webnlg: bool
) -> dict:
    """BLEU by seen/unseen (WebNLG), by category, and by input size."""
    groups: dict[str, dict[str, list[int]]] = {}
    for i, row in enumerate(rows):
        category = row.get("category")
        if category is not None:
            groups.setdefault("by_category", {}).setdefault(category, []).append(i)
            if webnlg:
                part = "seen" if category in WEBNLG_SEEN else "unseen"
                part = part if category in WEBNLG_SEEN + WEBNLG_UNSEEN else "other"
                groups.setdefault("seen_unseen", {}).setdefault(part, []).append(i)
        if row.get("size"):
            groups.setdefault("by_size", {}).setdefault(str(row["size"]), []).append(i)
    out = {}
    for name, subsets in groups.items():
        keys = sorted(subsets, key=int) if name == "by_size" else sorted(subsets)
        out[name] = {}
        for key in keys:
            out[name][key] = scorer.scores(chosen, subsets[key])
            if top is not None:
                out[name][key]["top_beam_bleu"] = scorer.scores(top, subsets[key])["bleu"]
    return out
