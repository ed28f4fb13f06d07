"""The `datatuner` commands: each takes the parsed arguments and returns the one-line JSON summary
(`flows/cli.py` parses, dispatches and reports errors). Heavy libraries are imported inside the
commands, so `--help` stays instant."""

from __future__ import annotations

import argparse
import os
import sys
import time


class UsageError(Exception):
    """Bad arguments: reported as one line, exit status 2."""


class _Progress:
    """A progress line on stderr every few seconds while a stage runs."""

    def __init__(self, label: str, every: float = 5.0):
        self.label, self.every, self.last = label, every, time.monotonic()

    def __call__(self, stats) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(
                f"{self.label}: read {stats.read:,} written {stats.written:,} "
                f"quarantined {stats.quarantined:,}",
                file=sys.stderr,
                flush=True,
            )


def _summary(command: str, manifest: dict, started: float) -> dict:
    from datatuner_core.runs import summary

    counts = manifest["counts"]
    return summary(
        command,
        manifest["output"],
        manifest,
        records=counts["records"],
        quarantined_by_reason=counts["quarantined_by_reason"],
        notes=counts["notes"],
        shards=len(manifest["files"]),
        skipped=bool(manifest.get("skipped")),
        seconds=round(time.monotonic() - started, 3),
    )


def cmd_ingest(args: argparse.Namespace) -> dict:
    from datatuner_core.config import reader_options
    from datatuner_core.ingest import ingest

    started = time.monotonic()
    options = reader_options(args.format, args.max_triples)  # None: the config's default
    manifest = ingest(
        args.format,
        args.input,
        args.output,
        split=args.split,
        options=options,
        shard_bytes=args.shard_mb * 1024 * 1024,
        force=args.force,
        progress=_Progress("ingest"),
    )
    return _summary("ingest", manifest, started)


def cmd_linearize(args: argparse.Namespace) -> dict:
    from datatuner_core.config import LinearizeConfig
    from datatuner_core.linearize import linearize

    started = time.monotonic()
    manifest = linearize(
        args.input,
        args.output,
        LinearizeConfig(**({"mode": args.mode} if args.mode else {})),
        shard_bytes=args.shard_mb * 1024 * 1024,
        force=args.force,
    )
    summary = _summary("linearize", manifest, started)
    summary["special_tokens"] = len(manifest["extra"]["special_tokens"])
    return summary


def cmd_run(args: argparse.Namespace) -> dict:
    from datatuner_core.bases import check
    from datatuner_core.config import load_config
    from datatuner_core.runs import RunPaths, new_run_id
    from datatuner_core.vllm_engine import check_usable

    config = load_config(args.config, args.overrides)
    check(config)  # one line on a bad config, before Prefect
    check_usable(config.generate.engine)
    run_id = args.run_id or new_run_id(config.name)
    _before_flow(args, RunPaths(config.storage, run_id).run, f"{args.command}.log")
    from flows.pipeline import pipeline

    summary = pipeline(args.config, args.overrides, run_id)
    _print_headline(summary)
    return summary


def _before_flow(args: argparse.Namespace, folder: str, name: str, sub: str = "") -> None:
    """What every flow command does once its arguments are valid: the log file, then Prefect's
    temporary API server where no PREFECT_API_URL names one."""
    _log_to(args, folder, name, sub)
    _start_temporary_server()


def _start_temporary_server() -> None:
    """Start Prefect's temporary API server now, in a session of its own (where no API URL is
    set). Prefect would start it on the first flow run, in this terminal's process group: a
    Ctrl-C would then stop the server with the run, and the run, stopping, would wait minutes
    for the server to hear of it and fail with a connection error instead of saying what it
    kept. On Linux the server still ends when this process does, even by SIGKILL
    (PR_SET_PDEATHSIG); elsewhere Prefect stops it at exit as before."""
    import subprocess

    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    popen = subprocess.Popen

    def apart(*args, **kwargs):
        kwargs.update(start_new_session=True, preexec_fn=_end_with_parent)
        return popen(*args, **kwargs)

    subprocess.Popen = apart  # only for this one start: Prefect's own Popen call
    try:
        SubprocessASGIServer().start()
    finally:
        subprocess.Popen = popen


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent process dies (Linux; else nothing)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _log_to(args: argparse.Namespace, folder: str, name: str, sub: str = "") -> None:
    """Send Ray's own output to a log file: under `folder` (/`sub`) when it is on local disk,
    else in the temp folder; its path is printed now and named again by an error."""
    import tempfile

    from datatuner_core import console

    path = folder[len("file://") :] if folder.startswith("file://") else folder
    if "://" in path:
        path = os.path.join(tempfile.gettempdir(), "datatuner", path.rstrip("/").rsplit("/")[-1])
    log = os.path.join(path, sub, "logs", name) if sub else os.path.join(path, "logs", name)
    console.configure(log, be_verbose=args.verbose)
    print(f"datatuner: log file {log}" + ("" if args.verbose else " (--verbose shows it here)"),
          file=sys.stderr, flush=True)  # fmt: skip


def _standard_line(m: dict) -> str:
    """chrF, NIST, ROUGE-L and CIDEr of a headline, and why METEOR is absent."""
    names = (("chrF", "chrf"), ("NIST", "nist"), ("ROUGE-L", "rouge_l"), ("CIDEr", "cider"))
    parts = [(name, m.get(key)) for name, key in names]
    shown = ", ".join(f"{name} {'n/a' if v is None else f'{v:.2f}'}" for name, v in parts)
    return f"{shown} (METEOR not computed offline: see the report)"


def _print_headline(summary: dict) -> None:
    """A short human summary above the JSON line: the scores, three example texts, the paths."""
    m = summary.get("metrics") or {}

    def fmt(key, pct=False):
        value = m.get(key)
        if value is None:
            return "n/a"
        return f"{100 * value:.1f} %" if pct else f"{value:.2f}"

    lines = [
        f"run {summary['run_id']}: {m.get('n', 0)} texts",
        f"  BLEU {fmt('bleu')} (seen categories {fmt('bleu_seen')}, unseen {fmt('bleu_unseen')});"
        f" top beam alone {fmt('bleu_top_beam')}",
        f"  {_standard_line(m)}",
        f"  texts missing a fact of their record: {fmt('records_missing_share', True)} "
        f"({fmt('missing_per_record')} missing, {fmt('hallucinated_per_record')} added per "
        f"record); labelled accurate: {fmt('accurate_rate', True)}",
    ]
    for item in _examples(summary.get("report")):
        score = item.get("score")
        verdict = (item.get("label") or "no verdict") + (
            "" if score is None else f", P(accurate) {score:.2f}"
        )
        lines += [
            f"  data:    {_clip(item.get('data'))}",
            f"    text:  {_clip(item.get('text') or '(generation failed)')}",
            f"    verdict: {verdict}",
        ]
    lines += [
        f"  generations: {summary['generations']}",
        f"  report:      {summary['report']}/report.md",
    ]
    print("\n".join(lines))


def _examples(report_uri: str | None, n: int = 3) -> list[dict]:
    """Up to `n` example texts from the report's metrics: good ones first, then flawed ones."""
    from datatuner_core import storage

    if not report_uri:
        return []
    try:
        metrics = storage.read_json(storage.join_uri(report_uri, "metrics.json"), missing_ok=True)
    except Exception:  # noqa: BLE001 - the summary shows what it can
        return []
    found = (metrics or {}).get("examples") or {}
    good, bad = found.get("good") or [], found.get("bad") or []
    picked = good[: n - min(1, len(bad))]
    return picked + bad[: n - len(picked)]


def _clip(text: str | None, limit: int = 110) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_retrain(args: argparse.Namespace) -> dict:
    from datatuner_core.bases import check
    from datatuner_core.config import load_config
    from datatuner_core.runs import RunPaths, new_run_id
    from datatuner_core.vllm_engine import check_usable

    config = load_config(args.config, args.overrides)
    check(config)  # one line on a bad config, before Prefect
    check_usable(config.generate.engine)
    run_id = args.run_id or new_run_id(config.name)
    _before_flow(args, RunPaths(config.storage, run_id).run, f"{args.command}.log")
    from flows.retrain import retrain

    return retrain(args.config, args.overrides, run_id)


def cmd_verbalize(args: argparse.Namespace) -> dict:
    from datatuner_core.config import load_config

    if not args.registry and not (args.lm and args.classifier):
        raise UsageError("name the models: --registry URI, or --lm URI and --classifier URI")
    from datatuner_core.vllm_engine import check_usable

    check_usable(load_config(None, args.overrides).generate.engine)
    from flows.verbalize import input_stage, verbalize

    if not args.format and input_stage(args.input) is None:
        raise UsageError(f"--format is required: {args.input} is not a stage folder")
    _before_flow(args, args.output, "verbalize.log", sub="_stages")

    return verbalize(
        args.input, args.format, args.output, args.registry, args.lm, args.classifier,
        args.overrides,
    )  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from datatuner_core import storage
    from datatuner_core.report import report_stage

    parent = args.predictions.rstrip("/").rsplit("/", 1)[0] if "/" in args.predictions else "."
    out = args.output or storage.join_uri(parent, "report")
    result = report_stage(args.predictions, out, title=f"datatuner evaluate: {args.predictions}")
    metrics, head, files = result["metrics"], result["headline"], result["files"]
    bleu = "n/a" if head["bleu"] is None else f"{head['bleu']:.2f}"
    print(f"datatuner evaluate: {metrics['n']} texts: BLEU {bleu}, {_standard_line(head)}; "
          f"report {out}/report.md", file=sys.stderr, flush=True)  # fmt: skip
    return {
        "command": "evaluate",
        "output": out,
        "read": metrics["n"],
        "written": metrics["n"],
        "quarantined": 0,
        "records": metrics["n"],
        "quarantined_by_reason": {},
        "notes": {k: metrics[k] for k in ("n_failed", "n_without_references") if metrics.get(k)},
        "shards": len(files),
        "skipped": False,
        "metrics": head,
        "files": files,
    }


def cmd_export_serving(args: argparse.Namespace) -> dict:
    from datatuner_core.serving import export_serving

    card = export_serving(args.lm, args.output)
    print(f"datatuner export-serving: {args.lm} -> {args.output} ({card['architecture']}, the "
          f"{card['text_token']} state folded in)", file=sys.stderr, flush=True)  # fmt: skip
    return {"command": "export-serving", "output": args.output, "read": 1, "written": 1,
            "quarantined": 0, "serving": card}  # fmt: skip


def cmd_human_eval(args: argparse.Namespace) -> dict:
    from datatuner_core import human_eval, stage_reader, storage

    if args.action == "export":
        done = human_eval.export(args.predictions, args.output, n=args.n, seed=args.seed)
        read = stage_reader.read_manifest(args.predictions)["counts"]["written"]
        return {"command": "human-eval export", "read": read, "written": done["items"],
                "quarantined": 0, **done}  # fmt: skip
    if args.action == "import":
        result = human_eval.score(args.annotations, args.key)
        if args.output:
            storage.write_json(args.output, result)
        return {"command": "human-eval import", "read": result["items"],
                "written": result["items"], "quarantined": 0, **result}  # fmt: skip
    raise UsageError("human-eval needs an action: export or import")
