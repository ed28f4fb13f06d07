"""Evaluation of a generations stage (method §8): corpus BLEU/chrF, the fidelity picture and an
independent coverage check, with a WebNLG breakdown.

- BLEU and chrF are sacrebleu's own (`BLEU()` cased with the 13a tokenizer, `BLEU(lowercase=True)`
  as the paper reports it, `CHRF()`), on references grouped per input: reference stream k holds
  the k-th reference of every input, padded with None where an input has fewer (sacrebleu drops
  None; padding with "" would add a zero-length reference that can change the brevity penalty).
  Inputs without references are left out of BLEU and counted; a null text (failed generation)
  is scored as an empty hypothesis and counted.
- Coverage is a heuristic that does not depend on the classifier: the record's `entities` missing
  from a text, plus entities of *other* records (a corpus-wide set) that appear in it, over the
  number of entities (after Shimorina et al. 2018, as in the DataTuner paper's SER baseline).
  Matching runs on normalised text (accents folded, lower case, apostrophes dropped, `D.C.` → dc,
  thousands separators and ordinal suffixes dropped, other punctuation → space); numbers
  `2776.0` also match `2776`, ISO dates also match `26 April 1945` / `April 26 1945`,
  `English language` also matches `English`, `United States` also `US`/`America`, and
  `Abilene, Texas` also matches when each part occurs. Hallucinations are leftmost-longest,
  whole-phrase matches (a dict lookup per phrase length at each token). Not counted: short
  (< 4 characters) or purely numeric entities, ones inside this record's entities, ones made of
  them (`Haputale, Sri Lanka`), and one-word ones sharing a stem with them (`musician`/`music`).
  On the WebNLG test references themselves the error rate is 6.1% (the heuristic's floor).
- The top beam (`candidates[0]`) is the paper's No_FC system; the chosen text is FC (reranked).
- The oracle (`oracle`) is what a perfect chooser could reach among each input's candidates:
  per input, the candidate with the best sentence BLEU (sacrebleu's BLEU on that input's
  references, exp-smoothed) and, separately, the candidate with the fewest coverage errors;
  its corpus BLEU and coverage error bound what any reranker can get from these candidates.
- `accurate_precision` (under `coverage`): of the texts labelled `accurate`, the share with no
  coverage error — how far a data team can trust the label, checked against the heuristic.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from .corrupt import LABELS
from .metrics import standard_metrics
from .ser import ser_metrics

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
# Corpus entities shorter than this (normalised characters) are not searched for hallucinations.
MIN_HALLUCINATION_CHARS = 4
# Words sharing this many first letters count as one stem (`musician` / `music`).
STEM_CHARS = 5
# Common names a text writes differently from the knowledge graph (normalised forms).
ALIASES = {
    "united states": ("us", "usa", "america"),
    "united kingdom": ("uk", "britain", "british"),
}
MONTHS = (
    "january february march april may june july august september october november december"
).split()

_COLUMNS = ("text", "fidelity_label", "fidelity_score", "candidates", "references", "entities")


# ----------------------------------------------------------------------------- BLEU / chrF


def reference_streams(references_lists: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-input reference lists → sacrebleu's reference streams, padded with None."""
    width = max((len(refs) for refs in references_lists), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references_lists] for k in range(width)]


class CorpusScorer:
    """BLEU (cased and lowercased) and chrF against one corpus's references, for any hypotheses
    and any subset of inputs. References are processed once (sacrebleu's reference cache);
    segment statistics are computed once per system and summed per subset, which is exactly how
    sacrebleu's `corpus_score` aggregates, so a subset's score equals `corpus_bleu` on it."""

    def __init__(self, references_lists: Sequence[Sequence[str] | None]):
        from sacrebleu.metrics import BLEU, CHRF

        cleaned = [
            [r for r in refs or [] if r is not None and r.strip()] for refs in references_lists
        ]
        self.n = len(cleaned)
        # input index → row among the inputs that have references (the only ones scored)
        self.row = {i: k for k, i in enumerate(i for i, refs in enumerate(cleaned) if refs)}
        streams = reference_streams([refs for refs in cleaned if refs])
        self.metrics = (
            {
                "bleu": BLEU(references=streams),
                "bleu_lowercase": BLEU(lowercase=True, references=streams),
                "chrf": CHRF(references=streams),
            }
            if streams
            else {}
        )

    def segment_statistics(
        self,
        hypotheses: Sequence[str | None],
        reuse: tuple[Sequence, dict] | None = None,
        names: Iterable[str] | None = None,
    ) -> dict:
        """Per-input statistics of one system's texts (a null text is an empty hypothesis).
        `reuse=(other_hypotheses, their_statistics)` copies the statistics of identical texts
        (the top beam is mostly the chosen text). `names`: only these metrics (default all)."""
        if len(hypotheses) != self.n:
            raise ValueError(f"{len(hypotheses)} hypotheses but {self.n} reference lists")
        out: dict = {"failed": [h is None for h in hypotheses]}
        wanted = set(self.metrics if names is None else names)
        for name, metric in self.metrics.items():
            if name not in wanted:
                continue
            # what sacrebleu's _extract_corpus_statistics does, row by row, on the cached refs
            cache, stats = metric._ref_cache, []
            for i, k in self.row.items():
                if reuse is not None and reuse[0][i] == hypotheses[i]:
                    stats.append(reuse[1][name][k])
                else:
                    hyp = metric._preprocess_segment(hypotheses[i] or "")
                    stats.append(metric._compute_segment_statistics(hyp, cache[k]))
            out[name] = stats
        return out

    def scores(self, statistics: dict, indices: Iterable[int] | None = None) -> dict:
        """Corpus scores of the inputs `indices` (all by default), with their counts."""
        indices = list(range(self.n) if indices is None else indices)
        rows = [self.row[i] for i in indices if i in self.row]
        out: dict = {name: None for name in ("bleu", "bleu_lowercase", "chrf")}
        if rows:
            for name, metric in self.metrics.items():
                if name in statistics:  # a metric left out of `segment_statistics` stays None
                    stats = [statistics[name][k] for k in rows]
                    out[name] = metric._aggregate_and_compute(stats).score
        return {
            **out,
            "n": len(indices),
            "n_scored": len(rows),
            "n_without_references": len(indices) - len(rows),
            "n_failed": sum(statistics["failed"][i] for i in indices),
        }


def corpus_scores(
    hypotheses: Sequence[str | None], references_lists: Sequence[Sequence[str] | None]
) -> dict:
    """Corpus BLEU (cased, 13a), lowercased BLEU and chrF of `hypotheses` against the references
    of each input. `n` counts every input; `n_scored` those with at least one reference."""
    if len(hypotheses) != len(references_lists):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references_lists)} reference lists"
        )
    scorer = CorpusScorer(references_lists)
    return scorer.scores(scorer.segment_statistics(hypotheses))


# ----------------------------------------------------------------------------- coverage

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_INITIALS = re.compile(r"\b([a-z])\.(?=[a-z]\b)")  # d.c. → dc., a.f.c. → afc.
_APOSTROPHES = re.compile(r"['’`]")
# letters that NFKD does not decompose
_FOLD = str.maketrans(
    {"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "ł": "l", "đ": "d", "ı": "i", "þ": "th"}
)
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_NON_ALNUM = re.compile(r"[\W_]+")
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_PARENS = re.compile(r"\([^)]*\)")
_PART_SPLIT = re.compile(r",|\s+-\s+|\s+and\s+")


def normalize(text: str) -> str:
    """Lower case, accents folded, `&` → and, apostrophes dropped, `D.C.` → dc, `1,000` → 1000,
    `26th` → 26, other punctuation → space."""
    text = text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text.translate(_FOLD))
        text = "".join(c for c in text if not unicodedata.combining(c))
    text = _THOUSANDS.sub("", text.replace("&", " and "))
    text = _APOSTROPHES.sub("", _INITIALS.sub(r"\1", text))
    text = _ORDINAL.sub(r"\1", text)
    return " ".join(_NON_ALNUM.sub(" ", text).split())


def _is_numeric(phrase: str) -> bool:
    return all(token.isdigit() for token in phrase.split())


def _value_forms(value: str) -> tuple[str, ...]:
    """Normalised forms of one value: itself, an integral number without `.0`, a spelled date,
    `English` for `English language`, and the few aliases in ALIASES."""
    value = value.strip().strip('"').strip()
    forms = [normalize(value)]
    if _NUMBER.match(value) and float(value).is_integer():
        forms.append(str(abs(int(float(value)))))
    if date := _ISO_DATE.match(value):
        year, month, day = int(date[1]), int(date[2]), int(date[3])
        if 1 <= month <= 12:
            forms += [f"{day} {MONTHS[month - 1]} {year}", f"{MONTHS[month - 1]} {day} {year}"]
    if forms[0].endswith(" language"):
        forms.append(forms[0].removesuffix(" language"))
    forms += ALIASES.get(forms[0], ())
    return tuple(dict.fromkeys(f for f in forms if f))


@lru_cache(maxsize=200_000)
def entity_forms(entity: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(forms of the whole entity, forms of each part): the entity counts as present when one
    whole form, or one form of every part, occurs in the text. Parts are split at commas, ` - `
    and ` and `; parenthesised qualifiers (`Asterix (comicsCharacter)`, `1.2 (litres)`) are
    optional."""
    bare = _PARENS.sub(" ", entity).strip() or entity
    whole = tuple(dict.fromkeys(_value_forms(entity) + _value_forms(bare)))
    parts = [p for p in _PART_SPLIT.split(bare) if normalize(p)]
    part_forms = tuple(_value_forms(p) for p in parts) if len(parts) > 1 else ()
    return whole, part_forms


def _occurs(form: str, padded_text: str) -> bool:
    # numbers and short forms must be whole tokens (`1` is not in `1945`, `us` not in `house`);
    # longer words may be a substring (lenient: `Aarhus` in `Aarhus's`)
    if len(form) <= 3 or _is_numeric(form):
        return f" {form} " in padded_text
    return form in padded_text


def entity_present(entity: str, normalized_text: str) -> bool:
    """Whether `entity` occurs in a text already passed through `normalize`."""
    padded = f" {normalized_text} "
    whole, parts = entity_forms(entity)
    if any(_occurs(f, padded) for f in whole):
        return True
    return bool(parts) and all(any(_occurs(f, padded) for f in forms) for forms in parts)


class EntityIndex:
    """Corpus-wide entities, found in a text as whole phrases: at each token, a dict lookup per
    phrase length that starts with that token (cost independent of the number of entities)."""

    def __init__(self, entities: Iterable[str], min_chars: int = MIN_HALLUCINATION_CHARS):
        self.names: dict[tuple[str, ...], str] = {}
        for entity in sorted(set(entities)):
            phrase = normalize(_PARENS.sub(" ", entity)) or normalize(entity)
            if len(phrase) >= min_chars and not _is_numeric(phrase):
                self.names.setdefault(tuple(phrase.split()), entity)
        # first token → the lengths of the phrases that start with it, longest first
        lengths: dict[str, set[int]] = {}
        for tokens in self.names:
            lengths.setdefault(tokens[0], set()).add(len(tokens))
        self.by_first = {t: sorted(ls, reverse=True) for t, ls in lengths.items()}

    def __len__(self) -> int:
        return len(self.names)

    def find(self, tokens: Sequence[str]) -> list[tuple[str, ...]]:
        """Leftmost-longest, non-overlapping matches of indexed phrases in `tokens`."""
        found, i = [], 0
        while i < len(tokens):
            for length in self.by_first.get(tokens[i], ()):
                if (phrase := tuple(tokens[i : i + length])) in self.names:
                    found.append(phrase)
                    i += length
                    break
            else:
                i += 1
        return found


def coverage_errors(
    text: str | None, entities: Sequence[str], other_entities: EntityIndex | Iterable[str]
) -> dict:
    """The record's `entities` missing from `text`, and corpus entities in `text` that are not the
    record's (`hallucinated`). A null text misses every entity. Pass an `EntityIndex` built once
    when checking many texts; a plain iterable is indexed on every call."""
    index = (
        other_entities if isinstance(other_entities, EntityIndex) else EntityIndex(other_entities)
    )
    normalized = normalize(text or "")
    missing = [e for e in entities if not entity_present(e, normalized)]
    own = " | ".join(f for e in entities for f in entity_forms(e)[0])
    stems = {token[:STEM_CHARS] for token in own.split() if len(token) >= STEM_CHARS}
    hallucinated = [
        index.names[phrase]
        for phrase in index.find(normalized.split())
        if not _is_own(phrase, index.names[phrase], own, stems)
    ]
    return {"missing": missing, "hallucinated": list(dict.fromkeys(hallucinated))}


def _is_own(phrase: tuple[str, ...], entity: str, own: str, stems: set[str]) -> bool:
    """A corpus entity found in the text that still speaks of the record's own entities: a part
    of one (`Texas` of `Abilene, Texas`), made of them (`Haputale, Sri Lanka` when both are
    entities), or one word sharing a stem with one of their words (`musician` for `Rock music`)."""
    if " ".join(phrase) in own:
        return True
    parts = entity_forms(entity)[1]
    if parts and all(any(f in own for f in forms) for forms in parts):
        return True
    return len(phrase) == 1 and phrase[0][:STEM_CHARS] in stems


def coverage_error_rate(
    rows: Sequence[dict],
    text_getter: Callable[[dict], str | None],
    index: EntityIndex | None = None,
) -> dict:
    """(missing + hallucinated) / entities over `rows` (each with `entities`), and the share of
    records with any error. The corpus entity set is built from `rows` unless `index` is given."""
    if index is None:
        index = EntityIndex(e for row in rows for e in row.get("entities") or [])
    missing = hallucinated = total = with_error = with_missing = 0
    for row in rows:
        entities = row.get("entities") or []
        errors = coverage_errors(text_getter(row), entities, index)
        missing += len(errors["missing"])
        hallucinated += len(errors["hallucinated"])
        total += len(entities)
        with_error += bool(errors["missing"] or errors["hallucinated"])
        with_missing += bool(errors["missing"])
    return {
        # the rates a person reads (none can pass 100 %): records that miss an entity, and the
        # missing / hallucinated entities per record
        "records_missing_share": _ratio(with_missing, len(rows)),
        "missing_per_record": _ratio(missing, len(rows)),
        "hallucinated_per_record": _ratio(hallucinated, len(rows)),
        "error_rate": _ratio(missing + hallucinated, total),
        "missing_rate": _ratio(missing, total),
        "hallucination_rate": _ratio(hallucinated, total),
        "missing": missing,
        "hallucinated": hallucinated,
        "entities": total,
        "records": len(rows),
        "records_with_error": with_error,
        "record_error_share": _ratio(with_error, len(rows)),
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def accurate_precision(
    rows: Sequence[dict], text_and_label: Callable[[dict], tuple], index: EntityIndex
) -> dict:
    """Of the texts labelled `accurate`, how many have no coverage error (nothing missing,
    nothing hallucinated): the label's precision against the coverage check."""
    labelled = clean = 0
    for row in rows:
        text, label = text_and_label(row)
        if label == "accurate":
            errors = coverage_errors(text, row.get("entities") or [], index)
            labelled += 1
            clean += not (errors["missing"] or errors["hallucinated"])
    return {"precision": _ratio(clean, labelled), "accurate": labelled, "without_error": clean}


def classifier_agreement(rows: Sequence[dict], index: EntityIndex) -> dict:
    """The classifier's own label of every candidate (the LM's real beams, not synthetic pairs)
    against the coverage check: `agreement`, the share where "labelled accurate" equals "no
    coverage error"; `precision`, of the candidates labelled accurate, the share without an
    error; `error_recall`, of the candidates with an error, the share labelled something else."""
    both = accurate = accurate_clean = with_error = error_caught = n = 0
    for row in rows:
        entities = row.get("entities") or []
        texts, labels = row.get("candidate_texts") or [], row.get("candidate_labels") or []
        for text, label in zip(texts, labels, strict=False):
            if label is None:
                continue
            n += 1
            errors = coverage_errors(text, entities, index)
            clean = not (errors["missing"] or errors["hallucinated"])
            both += (label == "accurate") == clean
            accurate += label == "accurate"
            accurate_clean += label == "accurate" and clean
            with_error += not clean
            error_caught += not clean and label != "accurate"
    return {
        "candidates": n,
        "agreement": _ratio(both, n),
        "precision": _ratio(accurate_clean, accurate),
        "error_recall": _ratio(error_caught, with_error),
    }


# ----------------------------------------------------------------------------- oracle


def _error_count(text: str | None, entities: Sequence[str], index: EntityIndex) -> int:
    errors = coverage_errors(text, entities, index)
    return len(errors["missing"]) + len(errors["hallucinated"])


def oracle(
    rows: Sequence[dict], scorer: CorpusScorer, chosen: dict, index: EntityIndex | None
) -> dict:
    """The best BLEU and coverage reachable by picking one candidate per input (rows carry
    `candidate_texts`; an input without candidates keeps its text). BLEU: per input the
    candidate of best sentence BLEU, then the corpus BLEU of those picks; coverage: per input the
    fewest (missing + hallucinated) entities of any candidate, over all entities (`index`: the
    corpus entities, as in `coverage_error_rate`)."""
    lists = [r.get("candidate_texts") or [r.get("text")] for r in rows]
    width = max((len(texts) for texts in lists), default=0)
    texts = [r.get("text") for r in rows]
    names = [n for n in ("bleu", "bleu_lowercase") if n in scorer.metrics]  # chrF: no oracle
    by_rank = [  # segment statistics of every input's k-th candidate
        scorer.segment_statistics(
            [t[k] if k < len(t) else None for t in lists], reuse=(texts, chosen), names=names
        )
        for k in range(width)
    ]
    picked: dict = {name: [] for name in names}
    bleu = scorer.metrics.get("bleu")
    for i, k in scorer.row.items():  # ties: the earlier candidate (beam order)
        sentence = [bleu._compute_score_from_stats(s["bleu"][k]).score for s in by_rank]
        best = max(range(len(lists[i])), key=sentence.__getitem__)
        for name in names:
            picked[name].append(by_rank[best][name][k])
    picked["failed"] = [all(t is None for t in candidates) for candidates in lists]
    out = scorer.scores(picked)
    errors = total = 0
    for row, candidates in zip(rows, lists, strict=True) if index is not None else ():
        entities = row.get("entities") or []
        total += len(entities)
        errors += min(_error_count(t, entities, index) for t in candidates)
    return {
        "bleu": out["bleu"],
        "bleu_lowercase": out["bleu_lowercase"],
        "coverage_error": _ratio(errors, total) if index is not None else None,
        "candidates_per_input": _ratio(sum(len(t) for t in lists), len(lists)),
    }


# ----------------------------------------------------------------------------- fidelity


def label_summary(labels: Sequence[str | None], scores: Sequence[float | None]) -> dict:
    """Counts and shares of predicted labels (shares over labelled texts), the accurate rate and
    the mean P(accurate)."""
    counts = Counter(label for label in labels if label is not None)
    labelled = sum(counts.values())
    known = [*LABELS, *sorted(set(counts) - set(LABELS))]
    valid = [s for s in scores if s is not None]
    return {
        "counts": {label: counts.get(label, 0) for label in known},
        "shares": {label: _ratio(counts.get(label, 0), labelled) for label in known},
        "labelled": labelled,
        "unlabelled": len(labels) - labelled,
        "accurate_rate": _ratio(counts.get("accurate", 0), labelled),
        "mean_fidelity_score": _ratio(sum(valid), len(valid)),
    }


# ----------------------------------------------------------------------------- the whole stage


def _rows_of(table_or_rows: pa.Table | Sequence[dict]) -> list[dict]:
    """Rows with only what evaluation reads; `candidates` cut to the top beam, `size` = number of
    triples (or slots) of the input."""
    if isinstance(table_or_rows, pa.Table):
        table = table_or_rows
        names = set(table.column_names)
        cols = {
            c: table.column(c) for c in (*_COLUMNS, "category", "id", "linearized") if c in names
        }
        if "candidates" in cols:
            cols["candidate_texts"] = _candidate_texts(cols["candidates"])
            cols["candidate_labels"] = _candidate_texts(cols["candidates"], "fidelity_label")
            cols["candidates"] = pc.list_slice(cols["candidates"], 0, 1)
        if "data" in names:
            cols["size"] = _sizes(table.column("data"))
        lists = {n: c if isinstance(c, list) else c.to_pylist() for n, c in cols.items()}
        rows = [dict(zip(lists, values)) for values in zip(*lists.values())]
        return rows if lists else [{} for _ in range(table.num_rows)]
    rows = []
    for row in table_or_rows:
        row = dict(row)
        if "candidates" in row and "candidate_texts" not in row:
            row["candidate_texts"] = [c.get("text") for c in row["candidates"] or []]
            row["candidate_labels"] = [c.get("fidelity_label") for c in row["candidates"] or []]
        if "data" in row and "size" not in row:
            data = row.pop("data") or {}
            row["size"] = len(data.get("triples") or []) or len(data.get("slots") or [])
        rows.append(row)
    return rows


def _candidate_texts(candidates: pa.ChunkedArray, field: str = "text") -> pa.Array:
    """Each row's candidate texts (list<string>; or another string `field` of the candidate
    structs), without the rest of the structs."""
    lists = candidates.combine_chunks()
    return pa.ListArray.from_arrays(lists.offsets, lists.values.field(field), mask=lists.is_null())


def _sizes(data: pa.ChunkedArray) -> list[int]:
    data = data.combine_chunks()
    fields = {data.type.field(i).name for i in range(data.type.num_fields)}
    sizes = [0] * len(data)
    for name in ("triples", "slots"):
        if name in fields:
            lengths = pc.fill_null(pc.list_value_length(pc.struct_field(data, name)), 0)
            sizes = [s or n for s, n in zip(sizes, lengths.to_pylist())]
    return sizes


def _top(row: dict) -> dict:
    candidates = row.get("candidates") or []
    return candidates[0] if candidates else {}


def is_webnlg(categories: Iterable[str | None]) -> bool:
    """Whether the categories are WebNLG's (at least one, and none outside its fifteen)."""
    present = {c for c in categories if c is not None}
    return bool(present) and present <= set(WEBNLG_SEEN + WEBNLG_UNSEEN)


def _breakdown(
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


def evaluate_generations(
    table_or_rows: pa.Table | Sequence[dict], *, webnlg_breakdown: bool | None = None
) -> dict:
    """Metrics of a generations table (or rows): BLEU/chrF of the chosen text and of the top beam,
    the predicted-label picture, coverage errors before and after reranking, and breakdowns.
    `webnlg_breakdown=None` adds the seen/unseen split when the categories are WebNLG's."""
    rows = _rows_of(table_or_rows)
    has_top = any("candidates" in r for r in rows)
    has_entities = any("entities" in r for r in rows)
    categories = [r.get("category") for r in rows]
    webnlg = is_webnlg(categories) if webnlg_breakdown is None else webnlg_breakdown

    scorer = CorpusScorer([r.get("references") for r in rows])
    texts = [r.get("text") for r in rows]
    chosen = scorer.segment_statistics(texts)
    top_texts = [_top(r).get("text") for r in rows]
    top = scorer.segment_statistics(top_texts, reuse=(texts, chosen)) if has_top else None
    metrics = scorer.scores(chosen)
    metrics["top_beam"] = scorer.scores(top) if has_top else None
    if has_top:
        metrics["changed_by_rerank"] = sum(r.get("text") != _top(r).get("text") for r in rows)
    references = [r.get("references") for r in rows]
    metrics["standard"] = standard_metrics(texts, references)
    metrics["top_beam_standard"] = standard_metrics(top_texts, references) if has_top else None

    metrics["fidelity"] = {
        "chosen": label_summary(
            [r.get("fidelity_label") for r in rows], [r.get("fidelity_score") for r in rows]
        ),
        "top_beam": label_summary(
            [_top(r).get("fidelity_label") for r in rows],
            [_top(r).get("fidelity_score") for r in rows],
        )
        if has_top
        else None,
    }

    metrics["coverage"], index = None, None
    if has_entities:
        index = EntityIndex(e for r in rows for e in r.get("entities") or [])
        metrics["coverage"] = {
            "chosen": coverage_error_rate(rows, lambda r: r.get("text"), index),
            "top_beam": coverage_error_rate(rows, lambda r: _top(r).get("text"), index)
            if has_top
            else None,
            "accurate_precision": accurate_precision(
                rows, lambda r: (r.get("text"), r.get("fidelity_label")), index
            ),
            "classifier_agreement": classifier_agreement(rows, index) if has_top else None,
        }
    metrics["ser"] = ser_metrics(rows, (lambda r: _top(r).get("text")) if has_top else None)
    metrics["oracle"] = oracle(rows, scorer, chosen, index) if has_top else None
    metrics["examples"] = examples(rows, index)

    metrics["webnlg"] = webnlg
    metrics["breakdown"] = _breakdown(rows, scorer, chosen, top, webnlg)
    for part in ("seen", "unseen"):
        metrics[part] = metrics["breakdown"].get("seen_unseen", {}).get(part)
    return metrics


EXAMPLES = 3  # good and bad example texts in the report


def examples(rows: Sequence[dict], index: EntityIndex | None, n: int = EXAMPLES) -> dict:
    """A few texts a person can judge: `good` (labelled accurate, no coverage error) and `bad`
    (a missing or hallucinated entity, or a failed generation), in input order."""
    good, bad = [], []
    for row in rows:
        if len(good) >= n and len(bad) >= n:
            break
        errors = (
            coverage_errors(row.get("text"), row.get("entities") or [], index)
            if index is not None
            else {"missing": [], "hallucinated": []}
        )
        item = {
            "id": row.get("id"),
            "data": row.get("linearized"),
            "text": row.get("text"),
            "label": row.get("fidelity_label"),
            "score": row.get("fidelity_score"),
            "reference": (row.get("references") or [None])[0],
            "missing": errors["missing"],
            "hallucinated": errors["hallucinated"],
        }
        flawed = row.get("text") is None or errors["missing"] or errors["hallucinated"]
        if flawed and len(bad) < n:
            bad.append(item)
        elif not flawed and row.get("fidelity_label") in (None, "accurate") and len(good) < n:
            good.append(item)
    return {"good": good, "bad": bad}


def headline(metrics: dict) -> dict:
    """The few numbers a summary line carries (the CLI's `metrics`, a run note), flat."""
    get = lambda *keys: _dig(metrics, keys)  # noqa: E731
    return {
        "bleu": metrics["bleu"],
        "bleu_lowercase": metrics["bleu_lowercase"],
        "chrf": metrics["chrf"],
        "n": metrics["n"],
        "n_failed": metrics["n_failed"],
        "n_without_references": metrics["n_without_references"],
        "bleu_seen": get("seen", "bleu"),
        "bleu_unseen": get("unseen", "bleu"),
        "bleu_top_beam": get("top_beam", "bleu"),
        "nist": get("standard", "nist"),
        "rouge_l": get("standard", "rouge_l"),
        "cider": get("standard", "cider"),
        "accurate_rate": get("fidelity", "chosen", "accurate_rate"),
        "accurate_rate_top_beam": get("fidelity", "top_beam", "accurate_rate"),
        "coverage_error": get("coverage", "chosen", "error_rate"),
        "coverage_error_top_beam": get("coverage", "top_beam", "error_rate"),
        "records_missing_share": get("coverage", "chosen", "records_missing_share"),
        "missing_per_record": get("coverage", "chosen", "missing_per_record"),
        "hallucinated_per_record": get("coverage", "chosen", "hallucinated_per_record"),
        "ser": get("ser", "chosen", "ser"),
        "ser_references": get("ser", "references", "ser"),
        "oracle_bleu": get("oracle", "bleu"),
        "oracle_coverage_error": get("oracle", "coverage_error"),
        "verdict_accurate_precision": get("coverage", "accurate_precision", "precision"),
        "classifier_agreement": get("coverage", "classifier_agreement", "agreement"),
        # the pipeline's dev sample (generate.dev_records), when it verbalized one
        "bleu_validation": get("validation", "validation", "bleu"),
        "bleu_validation_unseen": get("validation", "validation_unseen", "bleu"),
    }


def split_summary(metrics: dict) -> dict:
    """The few figures of one split's metrics that the report sets side by side (test and the
    validation splits settings are chosen on)."""
    get = lambda *keys: _dig(metrics, keys)  # noqa: E731
    return {
        "n": metrics["n"],
        "bleu": metrics["bleu"],
        "bleu_top_beam": get("top_beam", "bleu"),
        "nist": get("standard", "nist"),
        "rouge_l": get("standard", "rouge_l"),
        "cider": get("standard", "cider"),
        "bleu_oracle": get("oracle", "bleu"),
        "coverage_error": get("coverage", "chosen", "error_rate"),
        "coverage_error_top_beam": get("coverage", "top_beam", "error_rate"),
        "coverage_error_oracle": get("oracle", "coverage_error"),
        "records_missing_share": get("coverage", "chosen", "records_missing_share"),
        "accurate_rate": get("fidelity", "chosen", "accurate_rate"),
    }


def evaluate_splits(generations_uri: str, storage_options: dict | None = None) -> dict:
    """`split_summary` of each split of a generations stage (the dev sample: `validation`,
    `validation_unseen`), each split scored on its own (its own corpus entity index)."""
    from . import stage_reader

    rows = stage_reader.read_stage(generations_uri, storage_options).to_pylist()
    splits = dict.fromkeys(str(r.get("split")) for r in rows)
    return {
        split: split_summary(
            evaluate_generations([r for r in rows if str(r.get("split")) == split],
                                 webnlg_breakdown=False)
        )
        for split in splits
    }  # fmt: skip


def _dig(value, keys):
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def evaluate_stage(
    generations_uri: str,
    storage_options: dict | None = None,
    *,
    webnlg_breakdown: bool | None = None,
) -> dict:
    """`evaluate_generations` on a generations stage folder (read through `storage`)."""
    from . import stage_reader

    table = stage_reader.read_stage(generations_uri, storage_options)
    metrics = evaluate_generations(table, webnlg_breakdown=webnlg_breakdown)
    if "model_version" in table.column_names:
        versions = pc.unique(table.column("model_version").combine_chunks()).to_pylist()
        metrics["model_versions"] = sorted(v for v in versions if v is not None)
    metrics["source"] = generations_uri
    return metrics
