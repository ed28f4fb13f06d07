"""The `datatuner` command line.

Every command validates its arguments, exits non-zero with one clear line on bad input, and prints
a one-line JSON summary as its last stdout line (`output`, `read`, `written`, `quarantined`, …).
Progress goes to stderr. Heavy libraries are imported inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time

EXIT_USAGE, EXIT_FAILED = 2, 1


class UsageError(Exception):
    """Bad arguments: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from datatuner_core.ingest import FORMATS

    parser = _Parser(
        prog="datatuner",
        description="Data-to-text with semantic-fidelity reranking, as a batch pipeline.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--verbose", action="store_true",
        help="show Ray's own output and every worker's log lines on the console (default: "
        "progress and stage counts only; the rest goes to the log file named at the start)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    ingest = commands.add_parser(
        "ingest",
        help="read a dataset or dump into a records stage (Parquet + manifest)",
        description="Read WebNLG XML, E2E / ViGGO CSV, JSON Lines or N-Triples into a records "
        "stage folder: part-*.parquet, _quarantine/, _manifest.json.",
    )
    ingest.add_argument("--format", required=True, choices=FORMATS, help="input format")
    ingest.add_argument("--input", required=True, help="file or folder: path, file://, s3://")
    ingest.add_argument("--output", required=True, help="stage folder URI to write")
    ingest.add_argument("--split", help="split name for every record (default: from file names)")
    ingest.add_argument(
        "--max-triples",
        type=_positive_int,
        default=7,
        help="ntriples: most triples per record when grouping by subject (default 7)",
    )
    _stage_options(ingest)

    lin = commands.add_parser(
        "linearize",
        help="linearize a records stage (special tokens, entities, vocabulary)",
        description="Turn a records stage into a linearized stage: `<subject> … <predicate> … "
        "<object> …` strings, the entities a faithful text must convey, and the special-token "
        "vocabulary of the train split (in the manifest).",
    )
    lin.add_argument("--input", required=True, help="records stage URI (from `ingest`)")
    lin.add_argument("--output", required=True, help="stage folder URI to write")
    lin.add_argument("--mode", choices=("fine", "coarse"), default="fine", help="state ids")
    _stage_options(lin)

    run = commands.add_parser(
        "run",
        help="the full pipeline flow: ingest → … → train → generate + rerank → evaluate",
        description="Run the `pipeline` Prefect flow (local ephemeral API unless PREFECT_API_URL "
        "is set): train both models on the config's dataset, verbalize its test split with "
        "reranking, and write the report under {storage}/runs/{run_id}/.",
    )
    run.add_argument("config", nargs="?", help="pipeline config YAML (default: embedded)")
    _config_options(run)

    retrain = commands.add_parser(
        "retrain",
        help="train a new model pair; promote it only if not worse on dev than production",
        description="Run the `retrain` flow: prepare the config's dataset, train both models "
        "through Ray Train, generate the dev split with the new pair and the production pair, "
        "and promote the new pair only if dev BLEU and the accurate rate are not worse.",
    )
    retrain.add_argument("config", help="pipeline config YAML (see configs/)")
    _config_options(retrain)

    verbalize = commands.add_parser(
        "verbalize",
        help="texts + fidelity scores for any ingestable input, with the production models",
        description="Run the `verbalize` flow: ingest and linearize the input (raw files, or a "
        "records / linearized stage folder from `ingest` / `linearize`), generate and rerank "
        "with the production models of --registry and the generation settings recorded with "
        "them (or --lm and --classifier), and write a generations stage at --output.",
    )
    verbalize.add_argument("--input", required=True, help="file or folder: path, file://, s3://")
    verbalize.add_argument(
        "--format", choices=FORMATS,
        help="input format (not needed when --input is a records or linearized stage folder)",
    )  # fmt: skip
    verbalize.add_argument("--output", required=True, help="generations stage URI to write")
    verbalize.add_argument("--registry", help="storage root whose production models to use")
    verbalize.add_argument("--lm", help="LM version URI (instead of --registry)")
    verbalize.add_argument("--classifier", help="classifier version URI (instead of --registry)")
    verbalize.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set generate.beams=3 (repeatable)",
    )  # fmt: skip

    evaluate = commands.add_parser(
        "evaluate",
        help="score a generations stage: BLEU, chrF, fidelity labels, coverage; write a report",
        description="Evaluate a generations stage (sacrebleu BLEU cased and lowercased with "
        "references grouped per input, chrF, predicted labels, coverage error before/after "
        "reranking, WebNLG breakdowns) and write metrics.json, report.md and plots.",
    )
    evaluate.add_argument("--predictions", required=True, help="generations stage URI")
    evaluate.add_argument("--output", help="report folder URI (default: ../report beside it)")

    human = commands.add_parser(
        "human-eval",
        help="export a stratified sample of texts to annotate; import the annotations",
        description="export: a CSV of up to --n texts (stratified by predicted label and by "
        "whether the slot/entity check agrees) with blank fluency and error columns, and a key "
        "file beside it. import: score the classifier and the check against the annotators "
        "(precision/recall) and the annotators against each other (Cohen's kappa).",
    )
    actions = human.add_subparsers(dest="action", metavar="{export,import}")
    out = actions.add_parser("export", help="write the annotation CSV and its key")
    out.add_argument("--predictions", required=True, help="generations stage URI")
    out.add_argument("--output", required=True, help="the CSV to write (the key: OUTPUT.key.json)")
    out.add_argument("--n", type=_positive_int, default=100, help="texts in the sample")
    out.add_argument("--seed", type=int, default=0)
    back = actions.add_parser("import", help="score annotated copies of the CSV")
    back.add_argument("--annotations", required=True, nargs="+", help="annotated CSVs")
    back.add_argument("--key", required=True, help="the key written by export")
    back.add_argument("--output", help="write the result JSON here too")
    return parser


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set lm.epochs=1 (repeatable)",
    )
    parser.add_argument("--run-id", help="run id (default: new); an existing one resumes")


def _stage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard-mb", type=_positive_int, default=64, help="target shard size in MiB (default 64)"
    )
    parser.add_argument(
        "--force", action="store_true", help="rewrite even if the inputs are unchanged"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    options = reader_options(args.format, args.max_triples)
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
    from datatuner_core.linearize import linearize

    started = time.monotonic()
    manifest = linearize(
        args.input,
        args.output,
        mode=args.mode,
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

    config = load_config(args.config, args.overrides)
    check(config)  # one line on a bad config, before Prefect
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

    config = load_config(args.config, args.overrides)
    check(config)  # one line on a bad config, before Prefect
    run_id = args.run_id or new_run_id(config.name)
    _before_flow(args, RunPaths(config.storage, run_id).run, f"{args.command}.log")
    from flows.retrain import retrain

    return retrain(args.config, args.overrides, run_id)


def cmd_verbalize(args: argparse.Namespace) -> dict:
    from datatuner_core.config import load_config

    if not args.registry and not (args.lm and args.classifier):
        raise UsageError("name the models: --registry URI, or --lm URI and --classifier URI")
    load_config(None, args.overrides)
    from flows.verbalize import input_stage, verbalize

    if not args.format and input_stage(args.input) is None:
        raise UsageError(f"--format is required: {args.input} is not a stage folder")
    _before_flow(args, args.output, "verbalize.log", sub="_stages")

    return verbalize(
        args.input, args.format, args.output, args.registry, args.lm, args.classifier,
        args.overrides,
    )  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from datatuner_core import evaluate, report, storage

    metrics = evaluate.evaluate_stage(args.predictions)
    parent = args.predictions.rstrip("/").rsplit("/", 1)[0] if "/" in args.predictions else "."
    out = args.output or storage.join_uri(parent, "report")
    files = report.write_report(metrics, out, title=f"datatuner evaluate: {args.predictions}")
    head = evaluate.headline(metrics)
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


# Arguments that name a location: a local path is made absolute here, once, before it reaches a
# Prefect task, a Ray worker or an actor (which may run in another working directory).
PATH_ARGS = ("input", "output", "registry", "lm", "classifier", "predictions", "key")


def _absolute_paths(args: argparse.Namespace) -> None:
    from datatuner_core.paths import absolute

    for name in PATH_ARGS:
        if getattr(args, name, None):
            setattr(args, name, absolute(getattr(args, name)))
    if getattr(args, "annotations", None):
        args.annotations = [absolute(uri) for uri in args.annotations]


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


COMMANDS = {
    "ingest": cmd_ingest,
    "linearize": cmd_linearize,
    "run": cmd_run,
    "retrain": cmd_retrain,
    "verbalize": cmd_verbalize,
    "evaluate": cmd_evaluate,
    "human-eval": cmd_human_eval,
}


def _prefect_defaults() -> None:
    """Defaults for the flows' Prefect client, unless the user set them: no telemetry, and a
    generous start-up time for the local ephemeral API on a busy machine (Prefect's is 20 s)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


_LAST_LINES: list[str] = []  # printed at exit, after Prefect's temporary server has stopped


def _print_last_lines() -> None:
    for line in _LAST_LINES:
        print(line, file=sys.stderr, flush=True)


def _error(message: str) -> None:
    """Print the error line; while Prefect's temporary API server runs (it logs its own stop line
    at exit), print it at exit instead, so that it ends the output."""
    server = sys.modules.get("prefect.server.api.server")
    if server is not None and getattr(server.SubprocessASGIServer, "_instances", None):
        _LAST_LINES.append(message)
    else:
        print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from datatuner_core.config import ConfigError
    from datatuner_core.ingest import IngestError
    from datatuner_core.registry import RegistryError
    from datatuner_core.storage import StorageError

    _prefect_defaults()
    atexit.register(_print_last_lines)  # before any Prefect server: runs after its stop line
    args = None
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            from datatuner_core import __version__

            print(json.dumps({"version": __version__}))
            return 0
        if args.command is None:
            raise UsageError("a command is required; see `datatuner --help`")
        _absolute_paths(args)
        summary = COMMANDS[args.command](args)
    except (UsageError, ConfigError) as exc:
        print(f"datatuner: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageError, IngestError, RegistryError, ValueError) as exc:
        log = os.environ.get("DATATUNER_LOG_FILE")
        _error(f"datatuner: error: {exc}" + (f" (details: {log})" if log else ""))
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("datatuner: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed flow run: Prefect has logged the details above
        first = (str(exc).strip().splitlines() or [""])[0]
        command = getattr(args, "command", None) or "datatuner"
        log = os.environ.get("DATATUNER_LOG_FILE")
        _error(f"datatuner: error: {command} failed: {type(exc).__name__}: {first}"
               + (f" (details: {log})" if log else ""))  # fmt: skip
        return EXIT_FAILED
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
