"""The `datatuner` command line: the parser, the dispatch to `flows.commands`, the exit codes.

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

from flows.commands import (
    UsageError,
    cmd_evaluate,
    cmd_export_serving,
    cmd_human_eval,
    cmd_ingest,
    cmd_linearize,
    cmd_retrain,
    cmd_run,
    cmd_verbalize,
)

EXIT_USAGE, EXIT_FAILED = 2, 1


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
        help="ntriples: most triples per record when grouping by subject (default: "
        "dataset.max_triples's, 7)",
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
    lin.add_argument(
        "--mode", choices=("fine", "coarse"), help="state ids (default: linearize.mode's, fine)"
    )
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

    serving = commands.add_parser(
        "export-serving",
        help="write a trained LM as a plain causal LM a batch engine (vLLM) serves exactly",
        description="Fold the <text> state into the LM's input embeddings (its output layer "
        "untied) and write a safetensors folder with its tokenizer and serving.json, which says "
        "how to build each prompt's embeddings. An engine that takes prompt embeddings (vLLM "
        "with --enable-prompt-embeds) then generates what `verbalize` generates (docs/models.md).",
    )
    serving.add_argument("--lm", required=True, help="trained LM URI (a run's or a registry's)")
    serving.add_argument("--output", required=True, help="folder URI to write")

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


COMMANDS = {
    "ingest": cmd_ingest,
    "linearize": cmd_linearize,
    "run": cmd_run,
    "retrain": cmd_retrain,
    "verbalize": cmd_verbalize,
    "evaluate": cmd_evaluate,
    "human-eval": cmd_human_eval,
    "export-serving": cmd_export_serving,
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
