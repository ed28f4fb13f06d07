"""Slot error rate (SER) for meaning representations (E2E, ViGGO): a rule-based slot aligner that
finds each slot value of a record in a text, with the paraphrases a data team expects, and counts
the errors the E2E challenge counts.

Units: each value of a slot is one unit (`platforms[PlayStation, Xbox, PC]` is three); a slot
with an empty value (ViGGO's `request_attribute(has_linux_release[])`) is one unit that counts as
mentioned when the slot's topic is named. Per unit:
- **missing**: the value is not found;
- **wrong**: not found, but another value of the same slot is (`area[riverside]` written as
  "in the city centre"; a yes/no slot stated with the opposite polarity);
- **repeated**: an enumerated value (not a name) is stated twice or more;
- **hallucinated** (per text, beside the units): a slot the record does not have is stated, for
  the slots whose wording is distinctive (E2E's area, familyFriendly, priceRange, customer rating,
  food; ViGGO's esrb, platforms, player_perspective, and the yes/no release slots).
SER = (missing + wrong + repeated + hallucinated) / units.

What counts as mentioned:
- names (name, near, developer, specifier and any slot without a lexicon): the value's words,
  case and punctuation folded; a title may drop its owner or subtitle ("Tom Clancy's The
  Division" as "The Division"), or two thirds of its content words may be present in any order;
- years and dates: the digits;
- yes/no slots: the topic ("Steam", "Linux", "Mac", "multiplayer", "family friendly", "kids") with
  a negation cue in the six words before it (not, no, never, without, non, n't, lacks, only …) for
  "no", without one for "yes"; "single-player" states has_multiplayer[no], "adults only" states
  familyFriendly[no];
- enumerated values: the lexicons below (ratings as "rated 5 out of 5", "five-star", "low
  customer rating"; prices as "cheap", "under £20", "£20-25"; ViGGO ratings by sentiment words:
  excellent = "amazing", "love", …; poor = "bad", "boring", "did not enjoy", …).
The lexicons were written against the E2E dev and ViGGO validation references (SER 3.0 % and
1.7 % of their slot values); the test references are only measured: ViGGO 2.1 %, E2E 3.5 %, most
of E2E's being "hallucinations" of slots the cleaned MR dropped although the text states them
("pricey" with priceRange removed). The report gives the references' SER as the aligner's floor.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

NEGATIONS = frozenset(
    "not no never without non lacks lack lacking neither nor nope unavailable isnt doesnt".split()
)
CLAUSE_BREAKS = frozenset("but however although though yet while whereas . ?".split())
NEGATION_WINDOW = 6
STOPWORDS = frozenset("the a an of and s in on for to".split())

YES_NO_TOPICS: dict[str, tuple[str, ...]] = {
    "available_on_steam": ("steam",),
    "has_linux_release": ("linux",),
    "has_mac_release": ("mac", "macs", "macos", "mac os", "os x", "osx", "macintosh", "apple"),
    "has_multiplayer": ("multiplayer", "multi player", "co op", "coop", "cooperative", "online",
                        "with friends", "with other players", "other players", "with others"),
    "familyFriendly": ("family friendly", "family", "families", "kid friendly", "kids",
                       "children", "child friendly", "child", "kid", "kids friendly"),
}  # fmt: skip
# phrases that state "no" without a negation word
NO_FORMS: dict[str, tuple[str, ...]] = {
    "has_multiplayer": ("single player", "singleplayer", "solo", "by yourself", "alone",
                        "on your own", "one player"),
    "familyFriendly": ("adults only", "adult only", "adults", "adult"),
}  # fmt: skip

_RATING_CUES = ("rating", "rated", "ratings", "rate", "star", "stars", "review", "reviews",
                "customer", "customers", "scored", "score")  # fmt: skip
_PRICE_CUES = ("price", "prices", "priced", "pricing", "cost", "costs", "range", "pounds",
               "menu", "spend")  # fmt: skip

LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    # E2E
    "area": {
        "riverside": ("riverside", "river", "waterfront", "riverfront"),
        "city centre": ("city centre", "city center", "centre", "center", "downtown",
                        "centre of the city", "centre of town", "city"),
    },
    "eatType": {
        "coffee shop": ("coffee shop", "coffee", "cafe", "coffeehouse", "coffee house"),
        "pub": ("pub", "bar", "tavern"),
        "restaurant": ("restaurant", "eatery", "diner", "bistro", "place to eat"),
    },
    "food": {
        "Chinese": ("chinese",), "English": ("english", "british"), "French": ("french",),
        "Indian": ("indian",), "Italian": ("italian", "pasta", "pizza"),
        "Japanese": ("japanese", "sushi"), "Fast food": ("fast food", "burgers", "burger"),
    },
    "priceRange": {
        "cheap": ("cheap", "inexpensive", "affordable", "low price", "low priced", "low cost",
                  "low prices", "budget", "cheaply", "low pricing", "low range"),
        "moderate": ("moderate", "moderately", "mid range", "average price", "average priced",
                     "reasonably priced", "reasonable", "mid price", "medium price",
                     "medium priced", "fair price", "fairly priced", "average prices"),
        "high": ("expensive", "high price", "high priced", "high prices", "pricey", "pricy",
                 "high end", "upscale", "costly", "high cost", "high range", "high pricing"),
        "less than £20": ("20", "twenty", "cheap", "low price", "low priced", "inexpensive",
                          "affordable", "low cost"),
        "£20-25": ("20 25", "25", "twenty five"),
        "more than £30": ("30", "thirty", "expensive", "high price", "high priced", "pricey"),
    },
    "customer rating": {
        "low": ("low", "poor", "poorly", "badly", "bad", "lowly"),
        "average": ("average", "mediocre", "ok", "okay", "decent", "moderate", "middling"),
        "high": ("high", "highly", "excellent", "great", "top", "good", "well"),
        "1 out of 5": ("1 out of 5", "1 star", "one star", "1 5", "one out of five", "one stars",
                       "1 stars", "rating of 1", "rated 1", "rating of one", "rated one"),
        "3 out of 5": ("3 out of 5", "3 star", "three star", "3 5", "three out of five",
                       "3 stars", "three stars", "rating of 3", "rated 3", "rating of three"),
        "5 out of 5": ("5 out of 5", "5 star", "five star", "5 5", "five out of five",
                       "5 stars", "five stars", "rating of 5", "rated 5", "rating of five"),
    },
    # ViGGO
    "esrb": {
        "E (for Everyone)": ("everyone", "rated e", "e rating", "e rated", "e for everyone",
                             "all ages", "any age", "every age", "e rated"),
        "E 10+ (for Everyone 10 and Older)": ("e 10+", "e10+", "everyone 10", "10 and older",
                                              "10 and up", "ages 10", "10+", "over 10",
                                              "older than 10", "10 years"),
        "T (for Teen)": ("teen", "teens", "teenager", "teenagers", "rated t", "t rating",
                         "t rated", "t for teen", "13+", "ages 13", "13 and"),
        "M (for Mature)": ("mature", "rated m", "m rating", "m rated", "m for mature", "adults",
                           "adult", "17+", "17 and", "ages 17"),
    },
    "platforms": {
        "PlayStation": ("playstation", "ps1", "ps2", "ps3", "ps4", "ps5", "psp", "ps vita",
                        "ps"),
        "Xbox": ("xbox",),
        "PC": ("pc", "pcs", "computer", "computers", "windows"),
        "Nintendo": ("nintendo", "wii", "gamecube", "game cube", "3ds", "ds", "switch", "n64",
                     "snes", "game boy", "gameboy", "nes"),
        "Nintendo Switch": ("switch", "nintendo switch"),
    },
    "player_perspective": {
        "first person": ("first person", "1st person", "fps", "first person shooter",
                         "first and third", "first or third"),
        "third person": ("third person", "3rd person", "over the shoulder", "first and third",
                         "first or third"),
        "bird view": ("bird view", "birds eye", "bird eye", "birdseye", "top down", "overhead",
                      "isometric", "aerial", "bird s eye", "birds eye view", "from above"),
        "side view": ("side view", "side scrolling", "side scroller", "sidescroller",
                      "side scrollers", "2d", "side on", "sidescrolling", "side perspective"),
    },
    "rating": {
        "excellent": ("excellent", "amazing", "fantastic", "outstanding", "incredible", "superb",
                      "brilliant", "phenomenal", "masterpiece", "one of the best", "love",
                      "loved", "awesome", "favorite", "favourite", "exceptional", "perfect",
                      "terrific", "wonderful", "great", "best", "stellar", "blown away",
                      "highly", "enjoy", "enjoyed", "really good", "top"),
        "good": ("good", "great", "decent", "solid", "enjoyable", "enjoy", "enjoyed", "liked",
                 "like", "fun", "nice", "fine", "pleasant", "not bad", "well", "positive",
                 "positively", "entertaining"),
        "average": ("average", "mediocre", "so so", "okay", "ok", "alright", "all right",
                    "meh", "middling", "nothing special", "not great", "not bad", "fond",
                    "strong feelings", "mixed", "not the best", "unremarkable", "indifferent",
                    "passable", "fair", "not that good", "not very good", "moderate",
                    "neither", "not amazing", "lukewarm", "nothing to write home about",
                    "not terrible", "could have been better", "ordinary"),
        "poor": ("poor", "poorly", "bad", "terrible", "awful", "horrible", "disappointing",
                 "disappointed", "boring", "hate", "hated", "dislike", "disliked", "not like",
                 "not enjoy", "not good", "not fun", "waste", "worst", "lousy", "not much fun",
                 "not very good", "not really like", "not a fan", "not care", "frustrating",
                 "dull", "not impressed", "unimpressed", "negative", "not enjoyable", "pass on",
                 "not recommend", "not worth", "garbage", "trash", "not think much",
                 "not that great", "not that good", "low", "subpar", "sub par", "not fond"),
    },
    "genres": {
        "action-adventure": ("action adventure", "action", "adventure"),
        "shooter": ("shooter", "shooters", "shooting", "shoot", "fps", "gun", "guns"),
        "driving/racing": ("driving", "racing", "race", "races", "racer", "drive", "cars"),
        "sport": ("sport", "sports", "football", "soccer", "basketball", "hockey", "golf",
                  "baseball", "tennis", "wrestling", "skateboarding", "snowboarding", "fifa",
                  "nba", "nfl", "skating", "boxing", "athletic"),
        "role-playing": ("role playing", "rpg", "rpgs", "role play", "roleplaying", "mmorpg"),
        "simulation": ("simulation", "simulator", "simulators", "sim", "sims", "simulations"),
        "strategy": ("strategy", "strategic", "tactical", "tactics", "rts"),
        "real-time strategy": ("real time strategy", "rts", "strategy", "real time"),
        "turn-based strategy": ("turn based strategy", "turn based", "strategy", "tbs"),
        "tactical": ("tactical", "tactics", "strategy"),
        "adventure": ("adventure", "adventures"),
        "indie": ("indie", "independent", "indies"),
        "music": ("music", "musical", "rhythm", "song", "songs"),
        "platformer": ("platformer", "platformers", "platforming", "platform"),
        "puzzle": ("puzzle", "puzzles", "puzzler"),
        "MMORPG": ("mmorpg", "mmo", "massively multiplayer", "mmorpgs", "mmos"),
        "action": ("action",),
        "vehicular combat": ("vehicular combat", "vehicle combat", "car combat", "vehicular",
                             "combat", "vehicle"),
        "hack-and-slash": ("hack and slash", "hack n slash", "hack n  slash", "slasher"),
        "point-and-click": ("point and click", "point n click"),
        "fighting": ("fighting", "fighter", "brawler", "fighters"),
        "text adventure": ("text adventure", "text based"),
        "trivia/board game": ("trivia", "board", "quiz"),
        "pinball": ("pinball",),
    },
}  # fmt: skip
# slots whose wording is distinctive enough to call a mention of an absent slot a hallucination
HALLUCINATION_SLOTS = ("area", "familyFriendly", "priceRange", "customer rating", "food",
                       "esrb", "platforms", "player_perspective", "available_on_steam",
                       "has_linux_release", "has_mac_release")  # fmt: skip
# phrases that need a cue word nearby (a rating word near "rated", a price word near "price")
CUED = {"customer rating": _RATING_CUES}
# a price word beside a rating cue (and no price cue) is the rating's ("a moderate rating")
ANTI_CUED = {"priceRange": (_RATING_CUES, _PRICE_CUES)}
# E2E's numeric and verbal values that writers use for each other
EQUIVALENT = {
    ("customer rating", "5 out of 5"): "high", ("customer rating", "high"): "5 out of 5",
    ("customer rating", "1 out of 5"): "low", ("customer rating", "low"): "1 out of 5",
    ("customer rating", "3 out of 5"): "average", ("customer rating", "average"): "3 out of 5",
    ("priceRange", "less than £20"): "cheap", ("priceRange", "cheap"): "less than £20",
    ("priceRange", "£20-25"): "moderate", ("priceRange", "moderate"): "£20-25",
    ("priceRange", "more than £30"): "high", ("priceRange", "high"): "more than £30",
}  # fmt: skip
E2E_SLOTS = frozenset({"eatType", "food", "priceRange", "customer rating", "area",
                       "familyFriendly", "near"})  # fmt: skip
_SHARED_WORDS = frozenset(p for v in LEXICON["priceRange"].values() for p in v) & frozenset(
    p for v in LEXICON["customer rating"].values() for p in v
)
REPEAT_SLOTS = frozenset({"area", "priceRange", "customer rating", "esrb",
                          "player_perspective", "familyFriendly"})  # fmt: skip
NAME_SLOTS = ("name", "near", "developer", "specifier")
LIST_SLOTS = ("genres", "platforms", "player_perspective")
CUE_WINDOW = 4
_TOKEN = re.compile(r"[a-z0-9+]+|\.")
_SENT = re.compile(r"[.?!;:]")


def normalize(text: str | None) -> list[str]:
    """Lowercase word tokens, accents folded, "n't" → "not", apostrophes dropped ("bird's" →
    "birds"), hyphens and slashes split, sentence ends kept as "." tokens."""
    text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().lower()
    text = re.sub(r"n['’]t\b", " not", text)
    text = re.sub(r"['’]s\b", "", text).replace("'", "").replace("’", "")
    text = re.sub(r"(?<=\d)[.,](?=\d)", "", text)  # 4.5, 1,000: one number token
    return _TOKEN.findall(_SENT.sub(" . ", text))


def _phrase_tokens(phrase: str) -> tuple[str, ...]:
    return tuple(t for t in normalize(phrase) if t != ".")


def find(tokens: Sequence[str], phrase: str) -> list[int]:
    """Start positions of `phrase` (normalized) in `tokens`."""
    words = _phrase_tokens(phrase)
    n = len(words)
    if not n:
        return []
    return [i for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n]) == words]


def _negated(tokens: Sequence[str], at: int) -> bool:
    for k in range(at - 1, max(-1, at - 1 - NEGATION_WINDOW), -1):
        if tokens[k] in CLAUSE_BREAKS:
            return False
        if tokens[k] in NEGATIONS or (tokens[k] == "only" and k == at - 1):
            return True
    return False


def _near(tokens: Sequence[str], at: int, length: int, cues: Iterable[str]) -> bool:
    lo, hi = max(0, at - CUE_WINDOW), min(len(tokens), at + length + CUE_WINDOW)
    window = set(tokens[lo:at]) | set(tokens[at + length : hi])
    return bool(window & set(cues))


def _mentions(tokens: Sequence[str], slot: str, phrases: Iterable[str]) -> list[int]:
    """Distinct positions where any phrase of a value occurs (cued slots: near a cue word)."""
    return [at for at, _ in _spans(tokens, slot, phrases)]


def _spans(tokens: Sequence[str], slot: str, phrases: Iterable[str]) -> list[tuple[int, str]]:
    """(position, phrase) of each distinct, non-overlapping mention, longest phrases first."""
    spans: list[tuple[int, int, str]] = []
    for phrase in sorted(set(phrases), key=lambda p: -len(_phrase_tokens(p))):
        words = _phrase_tokens(phrase)
        n = len(words)
        numeric = any(t[0].isdigit() for t in words)
        for at in find(tokens, phrase):
            if slot in CUED and not numeric and not _near(tokens, at, n, CUED[slot]):
                continue
            if slot in ANTI_CUED:  # "a moderate / mid range customer rating" is a rating
                against, cues = ANTI_CUED[slot]
                if set(tokens[at + n : at + n + 2]) & set(against) and not (
                    phrase in _SHARED_WORDS and _near(tokens, at, n, cues)
                ):
                    continue
            if all(at + n <= a or b <= at for a, b, _ in spans):  # not inside a longer one
                spans.append((at, at + n, phrase))
    return sorted((a, p) for a, _, p in spans)


def _polarity(tokens: Sequence[str], slot: str) -> set[str]:
    """The polarities ("yes", "no") a text states for a yes/no slot."""
    found: set[str] = set()
    for at in _mentions(tokens, slot, YES_NO_TOPICS[slot]):
        found.add("no" if _negated(tokens, at) else "yes")
    for at in _mentions(tokens, slot, NO_FORMS.get(slot, ())):
        found.add("yes" if _negated(tokens, at) else "no")
    return found


def _name_found(tokens: Sequence[str], value: str) -> bool:
    words = _phrase_tokens(value)
    if not words:
        return True
    if find(tokens, value):
        return True
    # a title without its owner or subtitle: "Tom Clancy's The Division" as "The Division",
    # "Age of Empires II: The Age of Kings" as "Age of Empires II"
    for part in re.split(r"['’]s\s+|:\s*", value)[1:] + re.split(r":\s*", value)[:1]:
        words = [w for w in _phrase_tokens(part) if w not in STOPWORDS]
        if words and part.strip() != value.strip() and find(tokens, " ".join(_phrase_tokens(part))):
            return True
    content = [w for w in words if w not in STOPWORDS]
    if not content:
        return False
    present = set(tokens)
    # a title's subtitle or leading words dropped: its last content words, or 2/3 of them
    tail = content[-2:] if len(content) > 2 else content
    return (len(content) > 2 and find(tokens, " ".join(tail))) or (
        sum(w in present for w in content) * 3 >= 2 * len(content)
    )


def _values(slot: str, value: str) -> list[str]:
    if slot in LIST_SLOTS:
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value.strip()]


def slot_errors(slots: Sequence[dict], text: str | None) -> dict:
    """The aligner's verdict on one text: units, missing, wrong, repeated, hallucinated, and
    the (slot, value, error) details."""
    tokens = normalize(text)
    out = {"units": 0, "missing": 0, "wrong": 0, "repeated": 0, "hallucinated": 0, "errors": []}

    def error(kind: str, slot: str, value: str) -> None:
        out[kind] += 1
        out["errors"].append([slot, value, kind])

    present = {s["slot"] for s in slots}
    for s in slots:
        slot, value = s["slot"], (s.get("value") or "").strip()
        for v in _values(slot, value) or [""]:
            out["units"] += 1
            if not v:  # an asked-for attribute: its topic must be named
                topics = YES_NO_TOPICS.get(slot) or tuple(
                    p for ps in LEXICON.get(slot, {}).values() for p in ps
                ) or (slot.replace("_", " "),)  # fmt: skip
                if not _mentions(tokens, slot, topics) and not find(tokens, slot.replace("_", " ")):
                    error("missing", slot, v)
                continue
            if slot in YES_NO_TOPICS and v.lower() in ("yes", "no"):
                said = _polarity(tokens, slot)
                if v.lower() not in said:
                    error("wrong" if said else "missing", slot, v)
                continue
            lexicon = LEXICON.get(slot)
            if lexicon is not None and v in lexicon:
                same = {v, EQUIVALENT.get((slot, v), v)}
                spans = _spans(tokens, slot, [p for o in same for p in lexicon[o]])
                if not spans:
                    others = [o for o in lexicon if o not in same and o not in _values(slot, value)]
                    if any(_mentions(tokens, slot, lexicon[o]) for o in others):
                        error("wrong", slot, v)
                    else:
                        error("missing", slot, v)
                elif slot in REPEAT_SLOTS and len(spans) > len({p for _, p in spans}):
                    error("repeated", slot, v)  # the same wording twice
                continue
            if re.fullmatch(r"\d{4}", v) or slot in ("release_year", "exp_release_date"):
                digits = re.findall(r"\d+", v)
                if not all(d in tokens for d in digits) and not find(tokens, v):
                    error("missing", slot, v)
                continue
            if not _name_found(tokens, v):
                error("missing", slot, v)
    e2e = bool(present & E2E_SLOTS)
    for slot in HALLUCINATION_SLOTS:
        if slot in present or (slot in E2E_SLOTS) != e2e:
            continue
        if slot in YES_NO_TOPICS:
            stated = bool(_polarity(tokens, slot))
        else:
            stated = any(_mentions(tokens, slot, ps) for ps in LEXICON[slot].values())
        if stated and not _owned_by_another(tokens, slot, slots):
            error("hallucinated", slot, "")
    return out


def _owned_by_another(tokens: Sequence[str], slot: str, slots: Sequence[dict]) -> bool:
    """A mention of `slot` that is another present slot's own wording (Steam as a PC platform,
    "adults" of an M rating, a platform word inside the game's name)."""
    names = " ".join((s.get("value") or "") for s in slots if s["slot"] in NAME_SLOTS)
    name_tokens = set(normalize(names))
    phrases = YES_NO_TOPICS.get(slot) or tuple(p for ps in LEXICON[slot].values() for p in ps)
    hits = [p for p in phrases if find(tokens, p)]
    if hits and all(set(_phrase_tokens(p)) <= name_tokens for p in hits):
        return True
    present = {s["slot"] for s in slots}
    shared = {("available_on_steam", "platforms"), ("platforms", "available_on_steam"),
              ("familyFriendly", "esrb"), ("esrb", "familyFriendly"),
              ("has_mac_release", "platforms"), ("platforms", "has_linux_release"),
              ("platforms", "has_mac_release"), ("has_linux_release", "platforms")}  # fmt: skip
    return any((slot, other) in shared for other in present)


def ser(rows: Iterable[tuple[Sequence[dict], str | None]]) -> dict:
    """Corpus SER of (slots, text) pairs: the error counts, units, SER, and the share of texts
    with at least one error."""
    totals = {"texts": 0, "units": 0, "missing": 0, "wrong": 0, "repeated": 0,
              "hallucinated": 0, "texts_with_errors": 0}  # fmt: skip
    for slots, text in rows:
        if not slots:
            continue
        found = slot_errors(slots, text)
        totals["texts"] += 1
        for key in ("units", "missing", "wrong", "repeated", "hallucinated"):
            totals[key] += found[key]
        totals["texts_with_errors"] += bool(found["errors"])
    errors = sum(totals[k] for k in ("missing", "wrong", "repeated", "hallucinated"))
    totals["ser"] = errors / totals["units"] if totals["units"] else None
    totals["text_error_rate"] = (
        totals["texts_with_errors"] / totals["texts"] if totals["texts"] else None
    )
    return totals


def _slots(row: dict) -> list[dict]:
    data = row.get("data") or {}
    return list(data.get("slots") or []) if isinstance(data, dict) else []


def ser_metrics(rows: Sequence[dict], top_text=None) -> dict | None:
    """SER of generations rows with slots (None when no row has any): the chosen texts, the top
    beams (`top_text(row)`), the human references (the aligner's own error floor), and the
    fidelity classifier's agreement with it (accurate ⟺ no slot error)."""
    rows = [r for r in rows if _slots(r)]
    if not rows:
        return None
    found = [slot_errors(_slots(r), r.get("text")) for r in rows]
    out = {
        "chosen": ser((_slots(r), r.get("text")) for r in rows),
        "top_beam": ser((_slots(r), top_text(r)) for r in rows) if top_text else None,
        "references": ser((_slots(r), ref) for r in rows for ref in r.get("references") or []),
    }
    labelled = [(r.get("fidelity_label"), not f["errors"]) for r, f in zip(rows, found)
                if r.get("fidelity_label")]  # fmt: skip
    agree = sum((label == "accurate") == clean for label, clean in labelled)
    said_accurate = [clean for label, clean in labelled if label == "accurate"]
    clean = [label for label, ok in labelled if ok]
    out["agreement"] = {
        "labelled": len(labelled),
        "agreement": agree / len(labelled) if labelled else None,
        # of the texts the classifier calls accurate, the share SER finds no error in
        "accurate_precision": sum(said_accurate) / len(said_accurate) if said_accurate else None,
        # of the texts SER finds no error in, the share the classifier calls accurate
        "accurate_recall": sum(lab == "accurate" for lab in clean) / len(clean) if clean else None,
    }
    return out
