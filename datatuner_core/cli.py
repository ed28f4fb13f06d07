"""The `datatuner` command line.

Every command validates its arguments, exits non-zero with one clear line on bad input, and prints
a one-line JSON summary as its last stdout line (`output`, `read`, `written`, `quarantined`, …).
Progress goes to stderr. Heavy libraries are imported inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
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
    from .ingest import FORMATS

    parser = _Parser(
        prog="datatuner",
        description="Data-to-text with semantic-fidelity reranking, as a batch pipeline.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
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
        description="Run the `verbalize` flow: ingest and linearize the input, generate and "
        "rerank with the production models of --registry (or --lm and --classifier), and write "
        "a generations stage at --output.",
    )
    verbalize.add_argument("--input", required=True, help="file or folder: path, file://, s3://")
    verbalize.add_argument("--format", required=True, choices=FORMATS, help="input format")
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
    counts = manifest["counts"]
    return {
        "command": command,
        "output": manifest["output"],
        "read": counts["read"],
        "written": counts["written"],
        "quarantined": counts["quarantined"],
        "records": counts["records"],
        "quarantined_by_reason": counts["quarantined_by_reason"],
        "notes": counts["notes"],
        "shards": len(manifest["files"]),
        "skipped": bool(manifest.get("skipped")),
        "seconds": round(time.monotonic() - started, 3),
    }


def cmd_ingest(args: argparse.Namespace) -> dict:
    from .ingest import ingest

    started = time.monotonic()
    options = {"max_triples": args.max_triples} if args.format == "ntriples" else {}
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
    from .linearize import linearize

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
    from .bases import check
    from .config import load_config

    check(load_config(args.config, args.overrides))  # one line on a bad config, before Prefect
    from flows.pipeline import pipeline

    summary = pipeline(args.config, args.overrides, args.run_id)
    _print_headline(summary)
    return summary


def _print_headline(summary: dict) -> None:
    """A short human summary above the JSON line."""
    m = summary.get("metrics") or {}

    def fmt(key):
        value = m.get(key)
        return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else value

    lines = [
        f"run {summary['run_id']}: {m.get('n', 0)} texts",
        f"  BLEU {fmt('bleu')} (seen {fmt('bleu_seen')}, unseen {fmt('bleu_unseen')}), "
        f"chrF {fmt('chrf')}, top-beam BLEU {fmt('bleu_top_beam')}",
        f"  accurate {fmt('accurate_rate')} (top beam {fmt('accurate_rate_top_beam')}), "
        f"coverage error {fmt('coverage_error')} (top beam {fmt('coverage_error_top_beam')})",
        f"  generations: {summary['generations']}",
        f"  report:      {summary['report']}/report.md",
    ]
    print("\n".join(lines))


def cmd_retrain(args: argparse.Namespace) -> dict:
    from .bases import check
    from .config import load_config

    check(load_config(args.config, args.overrides))  # one line on a bad config, before Prefect
    from flows.retrain import retrain

    return retrain(args.config, args.overrides, args.run_id)


def cmd_verbalize(args: argparse.Namespace) -> dict:
    from .config import load_config

    if not args.registry and not (args.lm and args.classifier):
        raise UsageError("name the models: --registry URI, or --lm URI and --classifier URI")
    load_config(None, args.overrides)
    from flows.verbalize import verbalize

    return verbalize(
        args.input, args.format, args.output, args.registry, args.lm, args.classifier,
        args.overrides,
    )  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from . import evaluate, report, storage

    metrics = evaluate.evaluate_stage(args.predictions)
    parent = args.predictions.rstrip("/").rsplit("/", 1)[0] if "/" in args.predictions else "."
    out = args.output or storage.join_uri(parent, "report")
    files = report.write_report(metrics, out, title=f"datatuner evaluate: {args.predictions}")
    return {
        "command": "evaluate",
        "output": out,
        "read": metrics["n"],
        "written": metrics["n"],
        "quarantined": 0,
        "metrics": evaluate.headline(metrics),
        "files": files,
    }


COMMANDS = {
    "ingest": cmd_ingest,
    "linearize": cmd_linearize,
    "run": cmd_run,
    "retrain": cmd_retrain,
    "verbalize": cmd_verbalize,
    "evaluate": cmd_evaluate,
}


def _prefect_defaults() -> None:
    """Defaults for the flows' Prefect client, unless the user set them: no telemetry, and a
    generous start-up time for the local ephemeral API on a busy machine (Prefect's is 20 s)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .ingest import IngestError
    from .registry import RegistryError
    from .storage import StorageError

    _prefect_defaults()
    args = None
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            from . import __version__

            print(json.dumps({"version": __version__}))
            return 0
        if args.command is None:
            raise UsageError("a command is required; see `datatuner --help`")
        summary = COMMANDS[args.command](args)
    except (UsageError, ConfigError) as exc:
        print(f"datatuner: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageError, IngestError, RegistryError, ValueError) as exc:
        print(f"datatuner: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("datatuner: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed flow run: Prefect has logged the details above
        first = (str(exc).strip().splitlines() or [""])[0]
        command = getattr(args, "command", None) or "datatuner"
        print(f"datatuner: error: {command} failed: {type(exc).__name__}: {first}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
