"""Model registry on object storage: versions and the production pointer.

    {root}/models/{lm|classifier}/{version}/          save_pretrained folder (safetensors)
    {root}/models/{lm|classifier}/production.json     {"version", "uri", "promoted_at", ...}
    {root}/models/{lm|classifier}/history.jsonl       one line per promotion decision

A version is registered by writing its folder (training does that); it becomes production only by
`promote`. The first version of a kind becomes production when there is none yet.
"""

from __future__ import annotations

import json
import time
import uuid

from . import storage

KINDS = ("lm", "classifier")


class RegistryError(Exception):
    """A registry lookup that cannot be answered (no production model, unknown kind)."""


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")


def new_version(name: str = "") -> str:
    """A sortable, unique version name: `20261124-103000-ab12cd[-name]`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{stamp}-{uuid.uuid4().hex[:6]}" + (f"-{name}" if name else "")


def version_uri(root: str, kind: str, version: str) -> str:
    _check(kind)
    return storage.join_uri(root, "models", kind, version)


def production(root: str, kind: str, storage_options: dict | None = None) -> dict | None:
    """The production pointer of `kind`, or None when nothing was promoted yet."""
    _check(kind)
    uri = storage.join_uri(root, "models", kind, "production.json")
    return storage.read_json(uri, storage_options, missing_ok=True)


def production_uri(root: str, kind: str, storage_options: dict | None = None) -> str:
    """The URI of the production model of `kind`; RegistryError when there is none."""
    pointer = production(root, kind, storage_options)
    if pointer is None:
        raise RegistryError(
            f"no production {kind} under {root}: train one with `datatuner retrain`"
        )
    return pointer["uri"]


def promote(
    root: str,
    kind: str,
    version: str,
    *,
    reason: str,
    metrics: dict | None = None,
    generate: dict | None = None,
    storage_options: dict | None = None,
) -> dict:
    """Point production at `version` (atomically) and append the decision to the history.
    `generate`: the generation settings the version's metrics were measured with; `verbalize
    --registry` generates with them (a user's `--set generate.*` still wins)."""
    pointer = {
        "kind": kind,
        "version": version,
        "uri": version_uri(root, kind, version),
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reason": reason,
        "metrics": metrics or {},
        **({"generate": generate} if generate else {}),
    }
    record_decision(root, kind, {**pointer, "promoted": True}, storage_options)
    storage.write_json(
        storage.join_uri(root, "models", kind, "production.json"), pointer, storage_options
    )
    return pointer


def record_decision(root: str, kind: str, decision: dict, storage_options: dict | None = None):
    """Append one promotion decision (promoted or not, with its numbers) to history.jsonl."""
    _check(kind)
    uri = storage.join_uri(root, "models", kind, "history.jsonl")
    old = storage.read_bytes(uri, storage_options, default=b"")
    line = json.dumps(decision, sort_keys=True).encode() + b"\n"
    storage.write_bytes(uri, old + line, storage_options)


def register_first(
    root: str,
    kind: str,
    version: str,
    metrics: dict,
    storage_options: dict | None = None,
    generate: dict | None = None,
) -> dict | None:
    """Promote `version` if `kind` has no production model yet; returns the pointer if it did."""
    if production(root, kind, storage_options) is not None:
        return None
    return promote(
        root, kind, version, reason="first trained version", metrics=metrics,
        generate=generate, storage_options=storage_options,
    )  # fmt: skip


def production_generate(root: str, storage_options: dict | None = None) -> dict:
    """The generation settings recorded with the production LM at promotion ({} if none)."""
    pointer = production(root, "lm", storage_options) or {}
    return dict(pointer.get("generate") or {})


def decide_promotion(candidate: dict, production: dict | None) -> dict:
    """Promote the candidate pair only if it is not worse than production on the same dev set:
    dev BLEU and accurate rate (both pairs' texts judged by the same classifier) at least equal.
    `candidate` / `production`: {"bleu": float, "accurate_rate": float}."""
    if production is None:
        return {"promote": True, "reason": "no production models yet", "candidate": candidate}
    worse = [
        f"{key} {candidate[key]:.4g} < {production[key]:.4g}"
        for key in ("bleu", "accurate_rate")
        if candidate.get(key) is None or candidate[key] < (production.get(key) or 0.0)
    ]
    return {
        "promote": not worse,
        "reason": "worse on dev: " + ", ".join(worse)
        if worse
        else "not worse on dev BLEU and accurate rate",
        "candidate": candidate,
        "production": production,
    }


def resolve_models(root: str | None, lm: str | None, classifier: str | None) -> tuple[str, str]:
    """The model pair: given URIs win, else the registry's production pointers."""
    if lm and classifier:
        return lm, classifier
    if not root:
        raise ValueError("name the models: --registry URI, or --lm URI and --classifier URI")
    return (
        lm or production_uri(root, "lm"),
        classifier or production_uri(root, "classifier"),
    )
