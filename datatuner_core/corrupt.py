"""Corruption stage: labelled (data, text) pairs for the semantic-fidelity classifier.

After the DataTuner method (reference notes §5), written from the description only. Every
(record, reference) yields the accurate pair plus up to `per_example` corruptions, each tagged
with one of five labels and the rule that made it:

- value_error: `entity_swap`, `entity_cut`, `negation_removal` (text) and `yes_no_flip` (the
  DATA is corrupted: a yes/no slot value is flipped and the original text is kept);
- omission: `sentence_drop`, `clause_drop`;
- repetition: `sentence_repeat`;
- hallucination: `sentence_insert`, `sentence_substitute` (sentences of OTHER records).

Rules are pure functions that return every candidate they can make, in a fixed order; all
randomness lives in `corrupt_records`, seeded by `seed` and the record id, so a record's output
does not depend on the other records except through the pool of foreign sentences/entities (a
bounded reservoir over the records read so far, deterministic given the input order).
"""

from __future__ import annotations

import random
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

LABELS = ("accurate", "value_error", "omission", "repetition", "hallucination")

RULE_LABELS: dict[str, str] = {
    "original": "accurate",
    "entity_swap": "value_error",
    "entity_cut": "value_error",
    "negation_removal": "value_error",
    "yes_no_flip": "value_error",
    "sentence_drop": "omission",
    "clause_drop": "omission",
    "sentence_repeat": "repetition",
    "sentence_insert": "hallucination",
    "sentence_substitute": "hallucination",
}

BALANCE_MODES = ("none", "upsample")
MAX_UPSAMPLE = 4  # a minority label grows towards the majority count, at most 4x its own count

# ----------------------------------------------------------------------------------------------
# Sentence splitting (regex, no downloads)

# Never a sentence end when followed by a capitalised word ("Dr. Smith", "St. Louis").
_TITLES = frozenset(
    "mr mrs ms dr prof st mt ft gen col lt sgt capt cmdr adm rev hon sen rep gov pres supt "
    "messrs mme mlle sr jr".split()
)
# A sentence end only when the next word usually starts a sentence ("in the U.S. It is ...").
_ABBREVIATIONS = frozenset(
    "etc inc ltd co corp bros vs approx est dept univ assn ave blvd rd jan feb mar apr jun jul "
    "aug sep sept oct nov dec fig vol ed eds al".split()
)
_STARTERS = frozenset(
    "the a an it its he she they his her their this that these those there in on at after "
    "before during since today however also".split()
)
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
_LAST_TOKEN = re.compile(r"(\S+)$")
_INITIALISM = re.compile(r"^\(?(?:[A-Za-z]\.){2,}$")  # U.S. / e.g. / J.R.R.
_INITIAL = re.compile(r"^\(?[A-Z]\.$")  # J.


def _is_boundary(before: str, after: str) -> bool:
    """Whether the punctuation ending `before` ends a sentence, given the text `after` it."""
    if not after or not (after[0].isupper() or after[0].isdigit() or after[0] in "\"'“‘(["):
        return False
    if not before.endswith("."):
        return True
    token = _LAST_TOKEN.search(before)
    word = token.group(1) if token else ""
    stem = word.rstrip(".").lstrip("(\"'“‘").lower()
    next_word = re.match(r"[\"'“‘(\[]*(\w+)", after)
    starts_sentence = bool(next_word) and next_word.group(1).lower() in _STARTERS
    if stem == "no" and after[0].isdigit():
        return False  # "No. 5"
    if stem in _TITLES:
        return False
    if _INITIAL.match(word):  # "J. R. R. Tolkien", "George W. Bush"; not "the letter B. It"
        words = before.split()
        prev = words[-2] if len(words) > 1 else ""
        return not (prev[:1].isupper() or not prev or re.match(r"[A-Z]\.", after))
    if stem in _ABBREVIATIONS or _INITIALISM.match(word):
        return starts_sentence
    return True


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences with a regex aware of abbreviations, initials and decimals."""
    text = " ".join(text.split())
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if _is_boundary(text[: m.end()].rstrip(), text[m.end() :]):
            sentences.append(text[start : m.end()].strip())
            start = m.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def _join(sentences: list[str]) -> str:
    """Join sentences with spaces, giving every non-final sentence closing punctuation."""
    fixed = [s if re.search(r"[.!?…][\"'”’)\]]*$", s) else s + "." for s in sentences[:-1]]
    return " ".join(fixed + sentences[-1:])


# ----------------------------------------------------------------------------------------------
# value_error rules

_STOPWORDS = frozenset("the a an of and or in on at to for de la le el du von van da di".split())


def _mention_pattern(entity: str) -> re.Pattern:
    """A case-insensitive pattern for `entity` as a whole-word mention."""
    return re.compile(r"(?<!\w)" + re.escape(entity) + r"(?!\w)", re.IGNORECASE)


def _mentions(text: str, entities: Iterable[str]) -> list[str]:
    """The distinct entities (case-insensitively) that occur in `text`, in entity order."""
    seen, found = set(), []
    for entity in entities:
        entity = " ".join(str(entity).split())
        key = entity.casefold()
        if entity and key not in seen and _mention_pattern(entity).search(text):
            seen.add(key)
            found.append(entity)
    return found


def _related(a: str, b: str) -> bool:
    """Whether one value contains the other (case-insensitively): a weak swap."""
    a, b = a.casefold(), b.casefold()
    return a in b or b in a


def _swappable(entities: Iterable[str]) -> list[str]:
    """Entities worth swapping or cutting: whitespace-normalised, not yes/no, 2+ characters."""
    values = (" ".join(str(e).split()) for e in entities)
    return [v for v in values if len(v) >= 2 and v.casefold() not in ("yes", "no")]


def entity_swap(text: str, entities: list[str], others: Iterable[str] = ()) -> list[str]:
    """Replace every mention of one entity by another of the record (else one of `others`)."""
    record = _swappable(entities)
    outputs = []
    for mention in _mentions(text, record):
        pattern = _mention_pattern(mention)
        replacements = [e for e in record if not _related(e, mention)]
        if not replacements:
            replacements = [e for e in _swappable(others) if not _related(e, mention)]
        for replacement in dict.fromkeys(replacements):
            outputs.append(pattern.sub(lambda _m, r=replacement: r, text))
    return outputs


def _prefix(surface: str, keep: int) -> str:
    """The first `keep` words of `surface`, without dangling punctuation."""
    return " ".join(surface.split()[:keep]).strip(",;:-–")


def _natural_cut(words: list[str], keep: int) -> bool:
    """Whether keeping the first `keep` of `words` is how people shorten the name anyway: up to
    a comma ("Appleton, Wisconsin" → "Appleton") or before a parenthesis ("Aarhus (city)")."""
    return words[keep - 1].endswith(",") or words[keep].startswith("(")


def entity_cut(text: str, entities: list[str]) -> list[str]:
    """Cut every mention of one multi-word entity to a proper prefix of its words (the method's
    rule). Not to a suffix, and not where the prefix is itself a usual short form: "the Alamo" →
    "Alamo", "Baku Turkish Martyrs' Memorial" → "Memorial", "Appleton, Wisconsin" → "Appleton"
    read as texts a person could write, and taught the classifier to call such texts errors."""
    outputs = []
    for mention in _mentions(text, _swappable(entities)):
        words = mention.split()
        pattern = _mention_pattern(mention)
        for keep in range(len(words) - 1, 0, -1):
            part = _prefix(mention, keep)
            if not part or all(w.lower() in _STOPWORDS for w in part.split()):
                continue
            if _natural_cut(words, keep):
                continue
            outputs.append(pattern.sub(lambda m, k=keep: _prefix(m[0], k), text))
    return list(dict.fromkeys(outputs))


_IRREGULAR_NT = {"can": "can", "won": "will", "shan": "shall", "ca": "can", "wo": "will"}
_NEGATION = re.compile(
    r"(?P<nt>\b(?P<stem>\w+)n['’]t\b)"
    r"|(?P<cannot>\b(?P<can>[Cc]an)not\b)"
    r"|(?P<word>\b(?:not|never|no)\b)(?!\.\s*\d)",
    re.IGNORECASE,
)


def _sentence_start(text: str, pos: int) -> bool:
    """Whether `pos` is at the start of `text` or right after sentence-ending punctuation."""
    return not text[:pos].strip() or bool(re.search(r"[.!?][\"'”’)\]]*\s*$", text[:pos]))


def _remove_negation(text: str, m: re.Match) -> str:
    """`text` with the negation matched by `m` removed (contractions keep their verb)."""
    if m["nt"]:
        stem = m["stem"]
        lowered = stem.lower()
        if lowered in ("ai",):
            return text
        verb = _IRREGULAR_NT.get(lowered, stem)
        if stem[:1].isupper():
            verb = verb[:1].upper() + verb[1:]
        return text[: m.start()] + verb + text[m.end() :]
    if m["cannot"]:
        return text[: m.start()] + m["can"] + text[m.end() :]
    start, end = m.start(), m.end()
    if _sentence_start(text, start):
        rest = text[end:].lstrip()
        if m["word"][:1].isupper():
            rest = rest[:1].upper() + rest[1:]
        return text[:start] + rest
    return text[:start].rstrip() + text[end:]


def negation_removal(text: str) -> list[str]:
    """Drop one negation ("not", "n't", "cannot", "never", "no"), one output per occurrence."""
    outputs = [_remove_negation(text, m) for m in _NEGATION.finditer(text)]
    return [o for o in dict.fromkeys(outputs) if o != text]


_YES_NO = re.compile(r"(?<![\w-])(yes|no)(?![\w-])", re.IGNORECASE)
_BRACKET_YES_NO = re.compile(r"\[\s*(yes|no)\s*\]", re.IGNORECASE)


def _flip_word(word: str) -> str:
    """ "yes" <-> "no", keeping the capitalisation style."""
    flipped = "no" if word.lower() == "yes" else "yes"
    if word.isupper() and len(word) > 1:
        return flipped.upper()
    return flipped.capitalize() if word[:1].isupper() else flipped


def _name_variants(slot: str) -> list[str]:
    """How a slot name may be written in a linearization: as-is, spaced, camelCase split."""
    spaced = slot.replace("_", " ")
    camel = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", spaced).lower()
    return list(dict.fromkeys([slot, spaced, camel]))


def _value_span(linearized: str, slot: str) -> tuple[int, int] | None:
    """Where the yes/no value of `slot` sits in `linearized`, or None when it cannot be found."""
    for name in _name_variants(slot):
        anchor = re.search(r"(?<![\w])" + re.escape(name) + r"(?![\w])", linearized, re.I)
        if not anchor:
            continue
        stop = linearized.find("<", anchor.end())
        value = _YES_NO.search(linearized, anchor.end(), stop if stop >= 0 else len(linearized))
        if value:
            return value.span(1)
    return None


def yes_no_flip(linearized: str, slots: Iterable[dict] = ()) -> list[str]:
    """Flip one yes/no slot value IN THE DATA (one output per such slot); the text stays as is."""
    spans = []
    for slot in slots or ():
        if str(slot.get("value", "")).strip().lower() in ("yes", "no"):
            span = _value_span(linearized, str(slot.get("slot", "")))
            if span and span not in spans:
                spans.append(span)
    if not spans and not slots:
        spans = [m.span(1) for m in _BRACKET_YES_NO.finditer(linearized)]
    return [linearized[:a] + _flip_word(linearized[a:b]) + linearized[b:] for a, b in spans]


# ----------------------------------------------------------------------------------------------
# omission, repetition and hallucination rules


def _by_length(sentences: list[str]) -> list[int]:
    """Sentence indices, shortest sentence first (ties in text order)."""
    return sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))


def sentence_drop(text: str) -> list[str]:
    """Drop one sentence of a text with at least two (shortest sentence first)."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return []
    return [_join(sentences[:i] + sentences[i + 1 :]) for i in _by_length(sentences)]


_COMMA = re.compile(r",(?!\d)")


def _clause_drops(sentence: str) -> list[str]:
    """`sentence` with a span from one comma to the next comma, or to the sentence end, deleted."""
    body = re.sub(r"[.!?…][\"'”’)\]]*$", "", sentence)
    tail = sentence[len(body) :]
    commas = [m.start() for m in _COMMA.finditer(body)]
    outputs = []
    for k, start in enumerate(commas):
        if k + 1 < len(commas):
            outputs.append(body[:start] + body[commas[k + 1] :] + tail)
        outputs.append(body[:start].rstrip() + (tail or "."))
    return [o for o in outputs if o.strip(" .!?") and o != sentence]


def clause_drop(text: str) -> list[str]:
    """Delete from a comma up to the next comma, or up to the end of its sentence."""
    sentences = split_sentences(text)
    outputs = []
    for i, sentence in enumerate(sentences):
        for shorter in _clause_drops(sentence):
            outputs.append(_join(sentences[:i] + [shorter] + sentences[i + 1 :]))
    return [o for o in dict.fromkeys(outputs) if o != text]


def sentence_repeat(text: str) -> list[str]:
    """Insert a copy of one sentence at another position (shortest sentence first)."""
    sentences = split_sentences(text)
    outputs = []
    for i in _by_length(sentences):
        for pos in range(len(sentences) + 1):
            outputs.append(_join(sentences[:pos] + [sentences[i]] + sentences[pos:]))
    return list(dict.fromkeys(outputs))


_TOKEN = re.compile(r"\w(?:[\w.,/'’-]*\w)?")


def _words(text: str) -> set[str]:
    """The case-folded word tokens of `text`."""
    return {t.casefold() for t in _TOKEN.findall(text)}


def novel(sentence: str, known: str) -> bool:
    """Whether `sentence` names something (a capitalised word or a number) absent from `known`."""
    tokens = _TOKEN.findall(sentence)
    salient = [
        t for i, t in enumerate(tokens) if any(c.isdigit() for c in t) or (i and t[0].isupper())
    ]
    known_words = _words(known)
    return any(t.casefold() not in known_words for t in salient)


def _foreign(sentences: list[str], foreign: Iterable[str]) -> list[str]:
    """The foreign sentences that are not already sentences of this text."""
    own = {s.casefold() for s in sentences}
    cleaned = dict.fromkeys(" ".join(f.split()) for f in foreign)
    return [f for f in cleaned if f and f.casefold() not in own]


def sentence_insert(text: str, foreign: Iterable[str]) -> list[str]:
    """Insert a sentence of another record at each position of the text."""
    sentences = split_sentences(text)
    outputs = []
    for f in _foreign(sentences, foreign):
        for pos in range(len(sentences) + 1):
            outputs.append(_join(sentences[:pos] + [f] + sentences[pos:]))
    return list(dict.fromkeys(outputs))


def sentence_substitute(text: str, foreign: Iterable[str]) -> list[str]:
    """Replace one sentence of a text with at least two by a sentence of another record."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return []
    outputs = []
    for f in _foreign(sentences, foreign):
        for i in range(len(sentences)):
            outputs.append(_join(sentences[:i] + [f] + sentences[i + 1 :]))
    return list(dict.fromkeys(outputs))


# ----------------------------------------------------------------------------------------------
# Pool of other records' sentences and entities


class _Reservoir:
    """A bounded, seeded reservoir sample of (record id, value) pairs."""

    def __init__(self, size: int, rng: random.Random):
        """An empty reservoir holding at most `size` items."""
        self.size, self.rng, self.seen, self.items = size, rng, 0, []

    def add(self, record_id: str, value: str) -> None:
        """Offer one item (standard reservoir sampling)."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append((record_id, value))
        else:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = (record_id, value)

    def draw(self, rng: random.Random, k: int, exclude_id: str) -> list[str]:
        """Up to `k` values drawn with `rng`, none from record `exclude_id`."""
        order = rng.sample(range(len(self.items)), min(len(self.items), 4 * k + 4))
        values = [self.items[i][1] for i in order if self.items[i][0] != exclude_id]
        return list(dict.fromkeys(values))[:k]


def _references(row: dict, max_references: int) -> list[str]:
    """The record's first `max_references` non-empty references, whitespace-normalised."""
    refs = (" ".join(str(r).split()) for r in (row.get("references") or []))
    return list(islice((r for r in refs if r), max_references))


def _entities(row: dict) -> list[str]:
    """The record's entities, or, when absent, its subjects/objects or slot values."""
    if row.get("entities"):
        return [str(e) for e in row["entities"]]
    data = row.get("data") or {}
    values = [v for t in data.get("triples") or [] for v in (t["subject"], t["object"])]
    values += [s["value"] for s in data.get("slots") or []]
    return [v for v in dict.fromkeys(str(v).strip() for v in values) if v]


class _Pool:
    """Sentences and entities of the records read so far, for the rules that need other records."""

    def __init__(self, size: int, seed: int):
        """Empty sentence and entity reservoirs of `size` items each."""
        rng = random.Random(f"pool/{seed}")
        self.sentences, self.entities = _Reservoir(size, rng), _Reservoir(size, rng)

    def add(self, row: dict, max_references: int) -> None:
        """Offer one record's reference sentences and entities."""
        record_id = str(row["id"])
        for ref in _references(row, max_references):
            for sentence in split_sentences(ref):
                self.sentences.add(record_id, sentence)
        for entity in dict.fromkeys(_entities(row)):
            self.entities.add(record_id, entity)


# ----------------------------------------------------------------------------------------------
# Drawing corruptions per (record, reference)


def _candidates(text: str, linearized: str, row: dict, foreign: list[str], others: list[str]):
    """Every candidate per rule, as {rule: [(linearized, text), ...]}."""
    entities = _entities(row)
    slots = (row.get("data") or {}).get("slots") or []
    text_rules: dict[str, Callable[[], list[str]]] = {
        "entity_swap": lambda: entity_swap(text, entities, others),
        "entity_cut": lambda: entity_cut(text, entities),
        "negation_removal": lambda: negation_removal(text),
        "sentence_drop": lambda: sentence_drop(text),
        "clause_drop": lambda: clause_drop(text),
        "sentence_repeat": lambda: sentence_repeat(text),
        "sentence_insert": lambda: sentence_insert(text, foreign),
        "sentence_substitute": lambda: sentence_substitute(text, foreign),
    }
    found = {rule: [(linearized, t) for t in make()] for rule, make in text_rules.items()}
    found["yes_no_flip"] = [(d, text) for d in yes_no_flip(linearized, slots)]
    return found


def _round_robin(lists: list[list]) -> Iterator:
    """Items of `lists` interleaved: the first of each, then the second of each, and so on."""
    for depth in range(max((len(x) for x in lists), default=0)):
        yield from (x[depth] for x in lists if depth < len(x))


def _draw(candidates: dict[str, list], original: tuple[str, str], k: int, key: str):
    """Up to `k` distinct (rule, linearized, text) picks spread over labels, then over rules.

    Each rule shuffles with its own generator (seeded by `key` and the rule name), so the picks
    of one rule do not depend on how many candidates another rule (say, a pool-fed one) made.
    """
    by_label: dict[str, list[list]] = {}
    for rule in sorted(candidates):
        picks = [(rule, d, t) for d, t in candidates[rule]]
        random.Random(f"{key}/{rule}").shuffle(picks)
        by_label.setdefault(RULE_LABELS[rule], []).append(picks)
    rng = random.Random(f"{key}/labels")
    per_label = []
    for label in LABELS[1:]:
        rules = by_label.get(label, [])
        rng.shuffle(rules)
        per_label.append(_round_robin(rules))
    rng.shuffle(per_label)
    chosen, seen = [], {original}
    for rule, data, text in _round_robin([list(x) for x in per_label]):
        if len(chosen) >= k:
            break
        if (data, text) not in seen:
            seen.add((data, text))
            chosen.append((rule, data, text))
    return chosen


def _corrupt_row(row: dict, pool: _Pool, *, per_example: int, seed: int, max_references: int):
    """The output rows of one record: per reference, the accurate pair then its corruptions."""
    record_id, linearized = str(row["id"]), str(row.get("linearized") or "")
    for r, text in enumerate(_references(row, max_references)):
        key = f"{seed}/{record_id}/{r}"
        rng = random.Random(f"{key}/pool")
        known = " ".join([linearized, *map(str, row.get("references") or [])])
        foreign = [f for f in pool.sentences.draw(rng, 6, record_id) if novel(f, known)][:3]
        others = pool.entities.draw(rng, 3, record_id)
        candidates = _candidates(text, linearized, row, foreign, others)
        picks = _draw(candidates, (linearized, text), per_example, key)
        for k, (rule, data, corrupted) in enumerate([("original", linearized, text), *picks]):
            yield {
                "id": f"{record_id}/{r}/{k}",
                "record_id": record_id,
                "linearized": data,
                "text": corrupted,
                "label": RULE_LABELS[rule],
                "rule": rule,
            }


def _corrupt_stream(rows, *, per_example, seed, max_references, lookahead, pool_size):
    """Corrupt records in input order; records enter the pool `lookahead` rows ahead."""
    pool, window = _Pool(pool_size, seed), deque()
    options = {"per_example": per_example, "seed": seed, "max_references": max_references}
    for row in rows:
        pool.add(row, max_references)
        window.append(row)
        if len(window) > lookahead:
            yield from _corrupt_row(window.popleft(), pool, **options)
    while window:
        yield from _corrupt_row(window.popleft(), pool, **options)


def corrupt_records(
    rows: Iterable[dict],
    *,
    per_example: int = 5,
    seed: int = 13,
    balance: str = "none",
    max_references: int = 3,
    lookahead: int = 64,
    pool_size: int = 2000,
) -> Iterator[dict]:
    """Labelled pairs for `linearized` rows: each accurate pair, then `per_example` corruptions."""
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {balance!r}")
    for name, value in (
        ("per_example", per_example),
        ("max_references", max_references),
        ("lookahead", lookahead),
        ("pool_size", pool_size),
    ):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    stream = _corrupt_stream(
        rows,
        per_example=per_example,
        seed=seed,
        max_references=max_references,
        lookahead=lookahead,
        pool_size=pool_size,
    )
    if balance == "upsample":
        return iter(balance_classes(list(stream), seed))
    return stream


def balance_classes(rows: Iterable[dict], seed: int = 13) -> list[dict]:
    """Oversample minority labels towards the majority count (at most 4x each), shuffled."""
    rows = list(rows)
    rng = random.Random(f"balance/{seed}")
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    majority = max((len(v) for v in by_label.values()), default=0)
    out = list(rows)
    for label in sorted(by_label):
        group = by_label[label]
        extra = min(majority - len(group), (MAX_UPSAMPLE - 1) * len(group))
        for n, row in enumerate(rng.choices(group, k=extra)):
            out.append({**row, "id": f"{row['id']}#up{n}"})
    rng.shuffle(out)
    return out


def corruption_stats(rows: Iterable[dict]) -> dict:
    """Counts of rows in total, by label (all five, zeros included) and by rule."""
    labels, rules, total = Counter(), Counter(), 0
    for row in rows:
        total += 1
        labels[row["label"]] += 1
        rules[row["rule"]] += 1
    return {
        "total": total,
        "by_label": {label: labels.get(label, 0) for label in LABELS},
        "by_rule": dict(sorted(rules.items())),
    }


def corrupt(
    linearized_uri: str,
    output_uri: str,
    *,
    per_example: int = 5,
    seed: int = 13,
    balance: str = "upsample",
    splits: tuple[str, ...] = ("train", "validation", "validation_unseen"),
    storage_options: dict | None = None,
    force: bool = False,
) -> dict:
    """The corruption stage: labelled pairs for the records of `splits` of a linearized stage.

    The train split is balanced with `balance` (it is held in memory for that: one row per pair);
    the other splits stay as the rules give them, as the classifier's held-out set
    (`validation_unseen`: the records of held-out categories, see `linearize`). A record
    without a reference text cannot give a pair and is quarantined. Returns the manifest.
    """
    from . import fingerprints, stage_reader, stage_writer
    from .linearize import UNSEEN_SPLIT
    from .schema import CORRUPTIONS, make_quarantine

    source = stage_reader.read_manifest(linearized_uri, storage_options)
    inputs = [{"uri": linearized_uri, "fingerprint": source["fingerprint"]}]
    # a split the linearized stage does not have is left out (and out of the fingerprint, so a
    # stage made before held-out categories existed stays current)
    present = (source.get("extra") or {}).get("splits") or {}
    splits = tuple(s for s in splits if s != UNSEEN_SPLIT or present.get(s))
    config = {"per_example": per_example, "seed": seed, "balance": balance, "splits": splits}
    fp = fingerprints.fingerprint("corrupt", inputs, config, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}
    writer = stage_writer.StageWriter(
        output_uri, "corrupt", CORRUPTIONS, storage_options=storage_options
    )
    by_split: dict[str, list[dict]] = {split: [] for split in splits}
    for batch in stage_reader.iter_stage_batches(linearized_uri, storage_options):
        for row in batch.to_pylist():
            if row["split"] not in by_split:
                continue
            writer.stats.read += 1
            if not any((r or "").strip() for r in row["references"] or []):
                bad = make_quarantine(row["source"], row["id"], "no reference text to corrupt", "")
                writer.quarantine(bad)
                continue
            writer.stats.written += 1
            writer.stats.records += 1
            by_split[row["split"]].append(row)
    stats = {}
    for split, rows in by_split.items():
        mode = balance if split == "train" else "none"
        pairs = corrupt_records(rows, per_example=per_example, seed=seed, balance=mode)
        pairs = [{**pair, "split": split} for pair in pairs]
        for pair in pairs:
            writer.add(pair)
        stats[split] = corruption_stats(pairs)
    return writer.commit(inputs=inputs, fingerprint=fp, config=config, extra={"pairs": stats})
