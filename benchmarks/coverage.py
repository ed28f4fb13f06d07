"""Coverage check speed: the corpus entity index built once (`coverage_check.EntityIndex`, what
the pipeline does) against a plain scan of every corpus entity per text, side by side in one run
on the same synthetic corpus (record i names entities i and 7i; its texts name i and 13i, mod N).

    python -m benchmarks.coverage --entities 5000 --records 1000 --candidates 5

The scan is timed on `--scan-records` records only (it is quadratic) and reported per text; both
must find the same missing and hallucinated counts on those records, or the run fails.
"""

from __future__ import annotations

import argparse
import time

from .common import RESULTS, description, emit_result


def corpus(n_entities: int, n_records: int) -> tuple[list[str], list[dict], list[str]]:
    words = [f"Entity number {i} {chr(97 + i % 26)}lpha" for i in range(n_entities)]
    rows = [
        {"entities": [words[i % n_entities], words[(i * 7) % n_entities]]} for i in range(n_records)
    ]
    texts = [
        f"{words[i % n_entities]} is related to {words[(i * 13) % n_entities]} and more words here."
        for i in range(n_records)
    ]
    return words, rows, texts


def scan_errors(text: str, entities: list[str], phrases: list[str], normalize) -> tuple[int, int]:
    """The obvious implementation: every corpus entity (normalized once, beforehand) looked for as
    a whole phrase in the text."""
    padded = f" {normalize(text)} "
    mine = {normalize(e) for e in entities}
    found = {p for p in phrases if f" {p} " in padded}
    return len(mine - found), len(found - mine)


def main(argv=None) -> int:
    from datatuner_core import coverage_check as ev

    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--entities", type=int, default=5000)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=5, help="texts checked per record")
    parser.add_argument("--scan-records", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "coverage.json"))
    args = parser.parse_args(argv)

    words, rows, texts = corpus(args.entities, args.records)
    started = time.perf_counter()
    index = ev.EntityIndex(words)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.candidates):
        indexed = ev.coverage_error_rate(rows, lambda r, it=iter(texts): next(it), index)
    index_s = time.perf_counter() - started
    checked = args.records * args.candidates

    k = min(args.scan_records, args.records)
    started = time.perf_counter()
    phrases = [ev.normalize(w) for w in words]
    scanned = [
        scan_errors(t, r["entities"], phrases, ev.normalize) for r, t in zip(rows[:k], texts)
    ]
    scan_s = time.perf_counter() - started
    sub = ev.coverage_error_rate(rows[:k], lambda r, it=iter(texts[:k]): next(it), index)
    scan_counts = (sum(m for m, _ in scanned), sum(h for _, h in scanned))
    if scan_counts != (sub["missing"], sub["hallucinated"]):
        raise SystemExit(f"the scan and the index disagree: {scan_counts} != "
                         f"{(sub['missing'], sub['hallucinated'])}")  # fmt: skip

    per_text_index = index_s / checked
    per_text_scan = scan_s / k
    result = {
        "entities": args.entities, "records": args.records, "candidates": args.candidates,
        "index_build_s": round(build_s, 4), "index_s": round(index_s, 4),
        "index_texts_per_s": round(checked / index_s, 1),
        "scan_records": k, "scan_s": round(scan_s, 4),
        "scan_texts_per_s": round(k / scan_s, 1),
        "speedup": round(per_text_scan / per_text_index, 1),
        "scan_seconds_for_all_texts": round(per_text_scan * checked, 1),
        "counts": {"missing": indexed["missing"], "hallucinated": indexed["hallucinated"],
                   "entities": indexed["entities"], "agree_on_scanned": True},
    }  # fmt: skip
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
