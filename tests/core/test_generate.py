"""The Generator on an architecture without token types (a tiny Llama saved like a fine-tuned
SmolLM2): beams with the state path, in float32 and with int8 dynamic quantization."""

from __future__ import annotations

import pytest
import torch

from datatuner_core.generator import Generator

from .test_state_lm import DATA, llama
from .test_state_lm import tok as tok  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from datatuner_core.tokenizer import build_tokenizer

    from .test_state_lm import SPECIALS, TEXT

    corpus = [DATA, TEXT, "Aarhus is in Denmark.", "The airport serves the city of Aarhus."] * 5
    tok = build_tokenizer("scratch:tiny", corpus, SPECIALS, vocab_size=400)
    path = tmp_path_factory.mktemp("llama")
    llama(tok, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


ROWS = [
    {"id": "a", "linearized": DATA, "entities": ["Aarhus Airport"]},
    {"id": "b", "linearized": "<subject> X <predicate> y <object> Z", "entities": ["X"]},
    {"id": "c", "linearized": "   ", "entities": []},
]


def test_llama_beams_float_and_int8(llama_dir):
    plain = Generator(llama_dir, None, beams=3, max_new_tokens=6, rerank=False, threads=1)
    rows = plain.generate_rows(ROWS)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [len(r["candidates"]) for r in rows] == [3, 3, 0]
    assert rows[2]["error"] == "empty linearization" and rows[2]["text"] is None
    for r in rows[:2]:
        scores = [c["lm_score"] for c in r["candidates"]]
        assert scores == sorted(scores, reverse=True) and r["text"] == r["candidates"][0]["text"]
    quantized = Generator(llama_dir, None, beams=3, max_new_tokens=6, rerank=False, int8=True)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    # 2 blocks x (q, k, v, o, gate, up) quantized; the MLP output projections (activation
    # outliers) and the output head stay float
    assert sum(isinstance(m, dynamic) for m in quantized.model.modules()) == 2 * 6
    kept = sorted(n for n, m in quantized.model.named_modules() if type(m) is torch.nn.Linear)
    assert kept == ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    rows8 = quantized.generate_rows(ROWS[:2])
    assert [len(r["candidates"]) for r in rows8] == [3, 3]
    assert all(r["error"] is None and r["text"] is not None for r in rows8)


def test_greedy_gives_one_candidate_with_its_normalised_score(llama_dir):
    import math

    greedy = Generator(llama_dir, None, beams=1, max_new_tokens=6, rerank=False, threads=1)
    rows = greedy.generate_rows(ROWS[:2])
    assert [len(r["candidates"]) for r in rows] == [1, 1]
    assert all(r["error"] is None and math.isfinite(r["lm_score"]) for r in rows)
    assert all(r["lm_score"] < 0 for r in rows)  # a mean log-probability


def test_new_token_cap_follows_the_prompt_and_keeps_each_record_its_own(llama_dir):
    """`max_new_tokens_ratio`: a record's budget is ratio x its prompt + slack, rounded up to 8,
    never above max_new_tokens; batches hold one cap, so a record's texts do not depend on the
    other records of its block."""
    capped = Generator(
        llama_dir, None, beams=2, max_new_tokens=24, rerank=False, threads=1,
        max_new_tokens_ratio=0.5, max_new_tokens_slack=0,
    )  # fmt: skip
    assert [capped.new_token_cap(n) for n in (1, 16, 17, 33, 48, 49, 200)] == [
        8, 8, 16, 24, 24, 24, 24,
    ]  # fmt: skip
    plain = Generator(llama_dir, None, beams=2, max_new_tokens=24, rerank=False, threads=1)
    assert plain.new_token_cap(1) == plain.new_token_cap(500) == 24
    long_row = {"id": "d", "linearized": " ".join([DATA] * 3), "entities": []}
    rows = [ROWS[1], long_row, ROWS[0]]
    lengths = {r["id"]: len(capped._prompt(r["linearized"])[0]) for r in rows}
    caps = {k: capped.new_token_cap(n) for k, n in lengths.items()}
    assert caps["b"] < caps["d"]  # the short and the long record get different budgets
    # one block: split into batches of one cap each (here every record alone or with its like)
    todo = sorted((lengths[r["id"]], i, None, None, False) for i, r in enumerate(rows))
    chunks = list(capped._chunks(todo))
    assert all(len({capped.new_token_cap(t[0]) for t in c}) == 1 for c in chunks)
    assert sum(len(c) for c in chunks) == 3
    together = {r["id"]: r["candidates"] for r in capped.generate_rows(rows)}
    for row in rows:  # each record alone: the same beams as within the block
        (alone,) = capped.generate_rows([row])
        assert [c["text"] for c in alone["candidates"]] == [c["text"] for c in together[row["id"]]]
    # each batch's beam search was given its records' cap (a spy on the real search)
    from datatuner_core import beam_search as search_module

    budgets, search = [], search_module.beam_search

    def spy(model, embeds, mask, **kwargs):
        budgets.append((embeds.shape[0], kwargs["budget"]))
        return search(model, embeds, mask, **kwargs)

    search_module.beam_search = spy
    try:
        capped.generate_rows(rows)
    finally:
        search_module.beam_search = search
    assert sorted(budgets) == sorted((len(c), capped.new_token_cap(c[0][0])) for c in chunks)
    tok = capped.tokenizer
    for c in together["b"]:  # no more tokens than its cap
        assert len(tok(c["text"], add_special_tokens=False)["input_ids"]) <= caps["b"]


def test_actor_plan_shares_the_cores_and_never_asks_for_more_gpus_than_there_are():
    from datatuner_core.generate import actor_plan

    # 2 cores: one actor runs torch on both; two actors one thread each, and together leave
    # one CPU to the read tasks
    assert actor_plan(1, 2.0, 0) == {"actors": 1, "threads": 2, "num_gpus": 0, "num_cpus": 1.0,
                                     "why": ""}  # fmt: skip
    two = actor_plan(2, 2.0, 0)
    assert (two["actors"], two["threads"], two["num_cpus"]) == (2, 1, 0.5)
    assert actor_plan(4, 16.0, 0)["threads"] == 4 and actor_plan(0, 2.0, 0)["actors"] == 1
    # one GPU: a second actor would wait forever for a GPU; it is not started, and says why
    gpu = actor_plan(2, 16.0, 1.0)
    assert (gpu["actors"], gpu["num_gpus"], gpu["threads"]) == (1, 1, None)
    assert "one GPU per actor" in gpu["why"]
    assert actor_plan(2, 16.0, 4.0)["actors"] == 2 and actor_plan(2, 16.0, 4.0)["why"] == ""
    # two 2-CPU nodes: an actor fits beside a read task on either node alone (after a node's
    # loss its actor restarts on the survivor), never 1.5 CPUs that only an idle node can hold
    cluster = actor_plan(2, 4.0, 0, node_cpus=2.0)
    assert (cluster["num_cpus"], cluster["threads"]) == (1.0, 2)
    assert actor_plan(2, 64.0, 0, node_cpus=16.0)["num_cpus"] == 15.0
    assert actor_plan(8, 32.0, 0, node_cpus=2.0)["threads"] == 2


def test_the_generator_reads_the_generate_section_whole(llama_dir):
    """Every decoding knob comes from the `generate` section (no default of its own): a section
    value reaches the Generator even where the fingerprint's `decoding()` leaves it out
    (`verdict: false`); keyword overrides are validated as the config validates them."""
    from datatuner_core.config import GenerateConfig

    section = GenerateConfig(verdict=False, beams=2, coverage=True, coverage_retry=True)
    assert "verdict" not in section.decoding()
    gen = Generator(llama_dir, None, section, rerank=False, threads=1)
    assert (gen.verdict, gen.beams, gen.coverage, gen.coverage_retry, gen.rerank) == (
        False, 2, True, True, False,
    )  # fmt: skip
    assert gen.cfg.beams == 2 and section.rerank is True  # the section itself is not changed
    default = Generator(llama_dir, None, rerank=False)
    defaults = GenerateConfig(rerank=False).model_dump().items()
    assert all(getattr(default, k) == v for k, v in defaults if hasattr(default, k))
    with pytest.raises(ValueError, match="beems"):
        Generator(llama_dir, None, beems=3)
    with pytest.raises(ValueError, match="beams"):
        Generator(llama_dir, None, beams=0)


def test_batch_tokens_cuts_batches_of_long_records_and_keeps_every_record(llama_dir):
    """`batch_tokens`: a batch holds at most records x beams x (longest prompt + cap) tokens, so
    long records decode in smaller batches (an actor's memory is bounded by the budget, not by
    the longest records of a dump); a record longer than the budget still gets a batch of its
    own, and every record comes back with the beams it gets without the budget."""
    kwargs = {"beams": 2, "max_new_tokens": 8, "batch_size": 8, "rerank": False, "threads": 1}
    free = Generator(llama_dir, None, batch_tokens=None, **kwargs)
    short = {"id": "s", "linearized": DATA, "entities": []}
    rows = [{**short, "id": f"s{i}"} for i in range(4)]
    long = " ; ".join([DATA] * 4)
    rows += [{"id": f"l{i}", "linearized": long, "entities": []} for i in range(3)]
    width = {r["id"]: len(free._prompt(r["linearized"])[0]) for r in rows}
    assert width["l0"] > 3 * width["s0"]
    budget = 2 * 2 * (width["l0"] + 8)  # two long records, or more short ones
    bounded = Generator(llama_dir, None, batch_tokens=budget, **kwargs)
    todo = sorted((width[r["id"]], i, None, None, False) for i, r in enumerate(rows))
    assert [len(c) for c in free._chunks(todo)] == [7]
    sizes = [[rows[t[1]]["id"][0] for t in c] for c in bounded._chunks(todo)]
    assert sizes == [["s"] * 4, ["l", "l"], ["l"]]
    assert all(len(c) * 2 * (max(t[0] for t in c) + 8) <= budget for c in bounded._chunks(todo))
    tiny = Generator(llama_dir, None, batch_tokens=1, **kwargs)  # below one record: one each
    assert [len(c) for c in tiny._chunks(todo)] == [1] * 7
    texts = {r["id"]: [c["text"] for c in r["candidates"]] for r in bounded.generate_rows(rows)}
    for row in rows:  # every record, with the beams it gets alone
        (alone,) = free.generate_rows([row])
        assert texts[row["id"]] == [c["text"] for c in alone["candidates"]]


def test_dtype_is_resolved_for_the_hardware():
    """`generate.dtype`: auto = bf16 on a GPU, float32 on a CPU; bf16 on a CPU only where the
    CPU computes it natively, with the reason in the log otherwise; never with int8."""
    from pydantic import ValidationError

    from datatuner_core.config import GenerateConfig
    from datatuner_core.generator import resolve_dtype

    assert resolve_dtype("auto", cuda=True) == ("bfloat16", "")
    assert resolve_dtype("auto", cuda=False) == ("float32", "")
    assert resolve_dtype("float32", cuda=True) == ("float32", "")
    assert resolve_dtype("bfloat16", cuda=False, native_bf16=True)[0] == "bfloat16"
    name, why = resolve_dtype("bfloat16", cuda=False, native_bf16=False)
    assert name == "float32" and "no native bf16" in why
    with pytest.raises(ValidationError, match="int8"):
        GenerateConfig(dtype="bfloat16", int8=True)
    # a stage made before the key existed stays current at its default; bf16 is a new stage
    assert "dtype" not in GenerateConfig().decoding()
    assert GenerateConfig(dtype="bfloat16").decoding()["dtype"] == "bfloat16"


def test_bf16_generator_on_a_cpu_with_native_bf16(llama_dir, capsys):
    """The LM in bf16 on a CPU (where it is native: this CPU's own answer decides what is
    checked): the weights are bf16, every record gets its beams with finite, ordered scores,
    the state path included."""
    import math

    from datatuner_core.generator import cpu_has_bf16

    gen = Generator(llama_dir, None, beams=3, max_new_tokens=6, rerank=False, threads=1,
                    dtype="bfloat16")  # fmt: skip
    native = cpu_has_bf16()
    want = torch.bfloat16 if native else torch.float32
    assert {p.dtype for p in gen.model.parameters()} == {want}
    assert gen.lm_dtype == str(want).removeprefix("torch.")
    assert "LM in" in capsys.readouterr().err
    rows = gen.generate_rows(ROWS)
    assert [len(r["candidates"]) for r in rows] == [3, 3, 0]
    for r in rows[:2]:
        scores = [c["lm_score"] for c in r["candidates"]]
        assert all(math.isfinite(s) for s in scores) and scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("beams", [1, 3])
def test_own_search_gives_the_candidates_of_generate(llama_dir, beams):
    """`generate.search: own` (the default) against `hf` on the same rows: the same candidates
    in the same order, the same scores, the empty row's error kept."""
    kw = {"beams": beams, "max_new_tokens": 8, "rerank": False, "threads": 1}
    own = Generator(llama_dir, None, search="own", **kw).generate_rows(ROWS)
    hf = Generator(llama_dir, None, search="hf", **kw).generate_rows(ROWS)
    for a, b in zip(own, hf, strict=True):
        assert [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]
        assert [c["lm_score"] for c in a["candidates"]] == pytest.approx(
            [c["lm_score"] for c in b["candidates"]], abs=1e-4
        )
        assert a["error"] == b["error"]


def test_gpt2s_gelu_is_fused_for_inference_with_the_same_outputs(tok, tmp_path):  # noqa: F811
    """`fuse_tanh_gelu`: GPT-2's elementwise `gelu_new` becomes one kernel of the same formula
    (one per block); logits equal to float rounding; a Llama (SiLU) is left as it is; the
    Generator fuses the LM it loads."""
    from transformers.activations import NewGELUActivation, PytorchGELUTanh

    from datatuner_core.generator import fuse_tanh_gelu

    from .test_state_lm import gpt2, gpt2_gelu_new

    assert fuse_tanh_gelu(gpt2(tok, seed=2)) == 0  # scratch models are built fused
    model = gpt2_gelu_new(tok, seed=2)  # as models trained before were
    ids = torch.randint(5, model.config.vocab_size, (3, 11))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    assert fuse_tanh_gelu(model) == model.config.n_layer
    assert not any(type(m) is NewGELUActivation for m in model.modules())
    assert sum(type(m) is PytorchGELUTanh for m in model.modules()) == model.config.n_layer
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5)
    assert fuse_tanh_gelu(llama(tok, seed=2)) == 0
    gpt2_gelu_new(tok, seed=2).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    gen = Generator(str(tmp_path), None, beams=1, max_new_tokens=4, rerank=False, threads=1)
    assert gen.fused_gelu == model.config.n_layer
    assert sum(type(m) is PytorchGELUTanh for m in gen.model.modules()) == model.config.n_layer
