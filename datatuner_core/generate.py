"""The generation stage: a `Generator` run over the rows of one split of a linearized stage,
on Ray Data (`map_batches` over an actor pool, `actor_plan` sharing the cluster) or, for a few
records, in this process; the texts are written in resumable blocks (`blocks.py`).

A record whose generation failed is written with its `error`, not dropped.
"""

from __future__ import annotations

import sys
import time

from . import fingerprints, stage_reader, stage_writer, storage
from .config import GenerateConfig
from .generator import Generator


def generate_stage(
    linearized_uri: str,
    output_uri: str,
    section: GenerateConfig,
    *,
    lm_uri: str,
    classifier_uri: str | None = None,
    split: str | None = "test",
    max_records: int | None = None,
    storage_options: dict | None = None,
    force: bool = False,
    on_progress=None,
) -> dict:
    """Generate for the rows of `split` (all rows if None) of a linearized stage on Ray Data and
    write the generations stage, with the `generate` config section's settings (read whole:
    beams, tokens, batch, actors, reranking, the decoding knobs of `section.decoding()`, length
    sort, blocks, the in-process threshold). Returns the manifest
    (`read == written + quarantined`: a record whose generation failed is written with its
    error, not dropped).

    `length_sort`: sort the records by the length of their linearization before batching (a Ray
    Data sort: one shuffle of the inputs before generation starts), so each beam search batches
    records of like length: less padding, and fewer decoding steps spent waiting for the
    longest text of a batch. The stage's rows come out in that order. Without it, each actor
    call sorts only its own block of `4 x batch_size` records. `sort_window`: sort consecutive
    windows of that many records instead, streaming: nothing holds more than a window, so the
    memory of a dump's generation does not grow with the dump.

    Resumable (`blocks.py`): the texts are written in blocks as they come back, one at least
    every `block_s` seconds, each a Parquet part and a journal entry. A run killed or stopped
    (Ctrl-C) keeps its finished blocks; the same call again generates only the records no
    finished block holds, and its manifest lists the kept parts beside the new ones (each id
    once). `force` forgets them. `on_progress(done, total)` is called after each block.

    `in_process_max`: when at most this many records are left, they are generated in this
    process with one `Generator` (no Ray start, no actor pool), in the same order and blocks."""
    from .blocks import BlockBuffer, BlockJournal
    from .console import Progress
    from .ray_setup import ensure_ray
    from .schema import GENERATIONS

    beams, max_new_tokens, batch_size = section.beams, section.max_new_tokens, section.batch_size
    rerank, decoding = section.rerank, section.decoding()
    length_sort, block_s = section.length_sort, section.block_s
    if length_sort and section.sort_window:
        length_sort = section.sort_window  # windows of this many records
    source = stage_reader.read_manifest(linearized_uri, storage_options)
    inputs = [
        {"uri": linearized_uri, "fingerprint": source["fingerprint"]},
        {"lm": lm_uri, "classifier": classifier_uri},
    ]
    config = {
        "beams": beams,
        "max_new_tokens": max_new_tokens,
        "split": split,
        "rerank": rerank,
        "max_records": max_records,
        "length_sort": bool(length_sort),
        "sort_window": section.sort_window if length_sort else None,
        **(decoding or {}),
    }
    fp = fingerprints.fingerprint("generate", inputs, config, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}
    if rerank and classifier_uri is None:
        raise ValueError("reranking needs a classifier: give classifier_uri or set rerank=false")

    # the lock first: an output that cannot be written fails before Ray starts; the finished
    # blocks of an earlier attempt with this fingerprint (killed, stopped) are kept
    writer = stage_writer.StageWriter(
        output_uri, "generate", GENERATIONS, storage_options=storage_options
    )
    with writer:
        journal = BlockJournal(output_uri, fp, storage_options)
        if force:
            journal.clear()
        kept = journal.finished()
        for entry in kept:
            writer.adopt(entry)
        done = [i for entry in kept for i in entry["ids"]]
        files = stage_reader.stage_files(linearized_uri, storage_options)
        todo = _count_rows(files, split, storage_options)
        todo = todo if max_records is None else min(todo, max_records)
        local = todo - len(done) <= section.in_process_max
        if kept:
            print(f"[generate] resuming: {len(done):,} of {todo:,} records kept from "
                  f"{len(kept)} finished blocks under {journal.loc.uri}",
                  file=sys.stderr, flush=True)  # fmt: skip
        batches = []
        models = (lm_uri, classifier_uri, section)
        if todo > len(done) and local:
            rows = _local_rows(files, split, max_records, done, length_sort, storage_options)
            batches = _local_batches(rows, models, storage_options, batch_size * 4)
        elif todo > len(done):
            ensure_ray()
            ds = _dataset(files, split, max_records, done, length_sort, batch_size, todo,
                          storage_options)  # fmt: skip
            ds = _generation_actors(ds, models, storage_options)
            batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
        progress = Progress("[generate]", todo, start=len(done))
        started, seen = time.time(), len(done)

        def on_block(entry: dict) -> None:
            writer.adopt(entry)
            if on_progress is not None:
                on_progress(seen, todo)

        buffer = BlockBuffer(journal, GENERATIONS, block_s, on_block)
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    flags = (
                        ("generation_errors", row["error"]),
                        ("truncated_inputs", row["truncated"]),
                    )
                    buffer.add(row, tuple(name for name, on in flags if on))
                seen += batch.num_rows
                if buffer.due():
                    buffer.flush()
                progress(seen, final=seen >= todo)
            buffer.flush()
        except KeyboardInterrupt:
            buffer.flush()  # the texts already back are kept
            print(f"[generate] stopped: {writer.stats.written:,} of {todo:,} records are kept in "
                  f"finished blocks under {journal.loc.uri}; the same command again generates "
                  "only the others", file=sys.stderr, flush=True)  # fmt: skip
            raise
        new = seen - len(done)
        resumed = {"blocks_kept": len(kept), "records_kept": len(done), "records_generated": new}
        extra = {"records_per_s": round(new / max(time.time() - started, 1e-9), 2),
                 "write_s": round(buffer.write_s, 3), "resumed": resumed,
                 "engine": "in_process" if local else "ray_data"}  # fmt: skip
        return writer.commit(inputs=inputs, fingerprint=fp, config=config, extra=extra)


def _local_rows(files, split, max_records, done, length_sort, storage_options):
    """The rows `_dataset` gives, read in this process: the split's first `max_records` rows
    in shard order, less `done`, sorted by linearization length (a stable sort; an int
    `length_sort` sorts windows of that many rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables, total = [], 0
    for uri in files:
        if max_records is not None and total >= max_records:
            break
        loc = storage.locate(uri, storage_options)
        with loc.fs.open(loc.path, "rb") as fh:
            table = pq.read_table(fh)
        if split is not None:
            table = table.filter(pc.equal(table["split"], split))
        if max_records is not None:
            table = table.slice(0, max_records - total)
        tables.append(table)
        total += table.num_rows
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        return None
    if done:
        table = table.filter(pc.invert(pc.is_in(table["id"], pa.array(list(done)))))
    if length_sort is True:
        table = _sort_by_length(table)
    elif length_sort:
        table = pa.concat_tables(
            _sort_by_length(table.slice(start, length_sort))
            for start in range(0, table.num_rows, length_sort)
        )
    return table


def _sort_by_length(table):
    """`table`'s rows by linearization length, a stable sort."""
    import pyarrow.compute as pc

    order = pc.sort_indices(_linearized_length(table), sort_keys=[("", "ascending")])
    return table.take(order)


def _local_batches(table, models, storage_options, block_rows):
    """Generations tables of `table`'s rows, `block_rows` at a time, by one Generator here
    (`models`: the LM, the classifier and the generate section it is built with)."""
    if table is None:
        return
    generator = Generator(*models, storage_options=storage_options)
    for start in range(0, table.num_rows, block_rows):
        yield generator(table.slice(start, block_rows))


def _dataset(files, split, max_records, done, length_sort, batch_size, todo, storage_options):
    """The Ray dataset of the records to generate: `split`'s rows (all if None), the first
    `max_records`, less the ids in `done` (kept from an earlier attempt), sorted by length
    (`length_sort` True: the whole dataset, one Ray Data sort; an int: windows of that many
    records, streaming)."""
    from ray.data.expressions import col

    ds = _read_parquet(files, storage_options)
    if split is not None:
        ds = ds.filter(expr=col("split") == split)  # a predicate Ray Data pushes down
    if max_records is not None:
        ds = ds.limit(max_records)
    if done:
        ds = ds.filter(expr=col("id").not_in(done))
    if length_sort is True:
        ds = ds.add_column("_length", _linearized_length, batch_format="pyarrow")
        ds = ds.sort("_length").drop_columns(["_length"])
        # Blocks of a few batches: results stream back (progress, bounded memory) instead of
        # one output block per input file.
        return ds.repartition(max(1, min(10_000, -(-(todo - len(done)) // (batch_size * 4)))))
    if length_sort:
        ds = ds.map_batches(_sort_by_length, batch_size=length_sort, batch_format="pyarrow")
    # streaming: blocks of at most a few batches, never the whole dataset at once
    return ds.repartition(target_num_rows_per_block=batch_size * 4)


def _generation_actors(ds, models, storage_options):
    """`ds` through an actor pool of Generators, each built from `models` (the LM, the
    classifier and the generate section, whole)."""
    import ray

    actors, batch_size = models[2].actors, models[2].batch_size

    resources = ray.cluster_resources()
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    plan = actor_plan(
        actors, resources.get("CPU", 1), resources.get("GPU", 0), node_cpus=node_cpus or None
    )
    if plan["actors"] != actors:
        print(f"[generate] {actors} actors asked, {plan['actors']} started: {plan['why']}",
              file=sys.stderr, flush=True)  # fmt: skip
    return ds.map_batches(
        Generator,
        fn_constructor_args=models,
        fn_constructor_kwargs={"storage_options": storage_options, "threads": plan["threads"]},
        batch_size=batch_size * 4,  # a block per call: the actor sorts it by length
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
        num_gpus=plan["num_gpus"],
        num_cpus=plan["num_cpus"],
        # Ray Data places actors with its default strategy, SPREAD: one per node before a second
        # on any, so a node's loss costs the fewest actors
    )


def actor_plan(actors: int, cpus: float, gpus: float, node_cpus: float | None = None) -> dict:
    """How `generate.actors` generation actors share the cluster. With GPUs: one GPU per actor,
    at most as many actors as GPUs (more would wait forever for a GPU), torch's own threads.
    On CPUs: the actors together leave one CPU for the read/repartition tasks (which would
    otherwise starve behind them) and each runs torch on its share of the cores (2 cores,
    2 actors: one thread each; `python -m benchmarks.tune actors` measures which is faster).
    On a cluster (`node_cpus`: the largest node's CPUs) an actor never asks for more than a
    node less one CPU: when a node is lost, its actors restart beside the survivors' and a
    read task still fits (two 2-CPU nodes, 2 actors of 1.5 CPUs: after one node's loss the
    restarted actor and the read tasks would wait for each other forever)."""
    actors = max(1, int(actors))
    node_cpus = float(node_cpus or cpus)
    cap = max(0.25, node_cpus - 1.0)
    if gpus >= 1:
        n = min(actors, int(gpus))
        why = f"one GPU per actor, {int(gpus)} GPU(s)" if n < actors else ""
        return {"actors": n, "threads": None, "num_gpus": 1,
                "num_cpus": max(0.25, min(cap, (float(cpus) - 1.0) / n)), "why": why}  # fmt: skip
    return {
        "actors": actors,
        "threads": max(1, int(min(float(cpus) // actors, node_cpus))),
        "num_gpus": 0,
        "num_cpus": max(0.25, min(cap, (float(cpus) - 1.0) / actors)),
        "why": "",
    }


def _linearized_length(table):
    """Characters of each row's linearization (0 for a missing one): the sort key of batching."""
    import pyarrow.compute as pc

    return pc.utf8_length(pc.fill_null(table["linearized"], ""))


def _count_rows(files: list[str], split: str | None, storage_options: dict | None) -> int:
    """How many rows of the shards belong to `split` (all if None): the `split` column only."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for uri in files:
        loc = storage.locate(uri, storage_options)
        with loc.fs.open(loc.path, "rb") as fh:
            if split is None:
                total += pq.ParquetFile(fh).metadata.num_rows
            else:
                column = pq.read_table(fh, columns=["split"])["split"]
                total += pc.sum(pc.equal(column, split)).as_py() or 0
    return total


def _read_parquet(files: list[str], storage_options: dict | None):
    """A Ray dataset over the stage's shards, through the same fsspec filesystem."""
    import ray
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    loc = storage.locate(files[0], storage_options)
    if "memory" in storage.protocols(loc.fs):
        raise storage.StorageError("Ray workers cannot read memory:// stages; use a path or s3://")
    paths = [storage.locate(f, storage_options).path for f in files]
    filesystem = PyFileSystem(FSSpecHandler(loc.fs))
    return ray.data.read_parquet(paths, filesystem=filesystem)
