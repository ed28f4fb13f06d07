"""Coverage-aware decoding: a tiny Llama whose output head favours `<eos>` (its plain decoder ends
at once) gives, with the hold and the bonus, texts that mention every entity of the record —
greedy, under beam search and sampling; on an entity it cannot complete it stops within its
bound; the hold counts per hypothesis even when beams reorder."""

from __future__ import annotations

import pytest
import torch

from datatuner_core.config import GenerateConfig
from datatuner_core.coverage import CoverageLogitsProcessor, entity_surface, missing_list
from datatuner_core.generator import Generator
from datatuner_core.rerank import missing_entities

from .test_state_lm import DATA, SPECIALS, TEXT, llama

ENTITIES = ["Aarhus Airport", "Aarhus, Denmark", "25.0"]
ROW = {"id": "a", "linearized": DATA, "entities": ENTITIES}


@pytest.fixture(scope="module")
def tok():
    from datatuner_core.tokenizer import build_tokenizer

    corpus = [DATA, TEXT, "Aarhus is in Denmark.", "The airport serves the city of Aarhus."] * 5
    return build_tokenizer("scratch:tiny", corpus, SPECIALS, vocab_size=400)


@pytest.fixture(scope="module")
def llama_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    llama(tok, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def eager_to_end(model, eos: int, boost: float = 6.0) -> None:
    """Give the output head a bias towards `<eos>`: the plain decoder ends at once."""
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[eos] = boost
    model.lm_head = head


def generator(llama_dir, beams, **kwargs):
    gen = Generator(llama_dir, None, beams=beams, max_new_tokens=40, rerank=False, threads=1,
                    **kwargs)  # fmt: skip
    eager_to_end(gen.model, gen.vocab.eos)
    return gen


def new_tokens(gen, row):
    """The rows' texts and, per returned sequence, the new tokens up to and including `<eos>`."""
    seen, generate = [], gen.model.generate

    def spy(**kwargs):
        out = generate(**kwargs)
        width = kwargs["inputs_embeds"].shape[1]
        for seq in out.sequences[:, width:].tolist():
            seen.append(seq.index(gen.vocab.eos) + 1 if gen.vocab.eos in seq else len(seq))
        return out

    gen.model.generate = spy
    (out,) = gen.generate_rows([row])
    return out, seen


@pytest.mark.parametrize("beams", [1, 3])
def test_plain_decoder_ends_early_coverage_decoding_mentions_every_entity(llama_dir, beams):
    (plain,) = generator(llama_dir, beams).generate_rows([ROW])
    assert all(missing_entities(c["text"], ENTITIES) == 3 for c in plain["candidates"])
    covered = generator(llama_dir, beams, coverage_decoding=True, coverage_bonus=50.0)
    (row,) = covered.generate_rows([ROW])
    assert len(row["candidates"]) == beams and row["error"] is None
    for c in row["candidates"]:  # every beam, not only the first, states the whole record
        assert missing_entities(c["text"], ENTITIES) == 0, c["text"]
    # the entities are completed, not only started: the bonus follows a started entity
    assert "Aarhus, Denmark" in row["text"] and "Aarhus Airport" in row["text"]


@pytest.mark.parametrize("beams", [1, 3])
def test_on_an_entity_it_cannot_complete_it_stops_within_its_bound(llama_dir, beams):
    row = {**ROW, "entities": ["Zyxwvut Qqqqq"]}
    _, plain = new_tokens(generator(llama_dir, beams, search="hf"), row)  # spied on `generate`
    assert plain[0] == 1  # the top beam: <eos> at once
    gen = generator(llama_dir, beams, coverage_decoding=True, coverage_max_hold=5)
    out, held = new_tokens(gen, row)
    # the text wanted to end at step 0: at most 5 more tokens, then <eos>, never the 40 budget
    assert max(held) <= 5 + 1 and min(held) > 1
    assert all(missing_entities(c["text"], row["entities"]) == 1 for c in out["candidates"])


def test_the_hold_counts_per_hypothesis_when_beams_reorder(tok):
    eos, filler = tok.convert_tokens_to_ids("<eos>"), tok.convert_tokens_to_ids("A")
    proc = CoverageLogitsProcessor(tok, [["Zyxwvut"]], eos, max_hold=2)
    prompt = [7, 7]  # two rows of one prompt (two beams)

    def step(rows, eos_top):
        ids = torch.tensor([prompt + r for r in rows])
        scores = torch.zeros(len(rows), len(tok))
        for i, top in enumerate(eos_top):
            scores[i, eos if top else filler] = 1.0
        return proc(ids, scores)[:, eos].isinf().tolist()

    assert step([[], []], [False, False]) == [True, True]  # held although nobody wants to end
    a, b = [filler], [filler + 1]
    assert step([a, b], [True, False]) == [True, True]  # a wants to end at 1
    assert step([a + [filler], b + [filler]], [True, True]) == [True, True]  # b at 2
    # the beams swap rows: a (2 tokens since it wanted) may end, b (1 token) is still held
    assert step([b + [filler] * 2, a + [filler] * 2], [True, True]) == [True, False]
    assert step([b + [filler] * 3], [True]) == [False]
    # an entity mentioned: nothing held
    done = CoverageLogitsProcessor(tok, [["Aarhus"]], eos, max_hold=2)
    aarhus = tok(" Aarhus", add_special_tokens=False)["input_ids"]
    assert done(torch.tensor([prompt]), torch.zeros(1, len(tok)))[0, eos].isinf()
    scores = done(torch.tensor([prompt + aarhus]), torch.zeros(1, len(tok)))
    assert not scores[0, eos].isinf()


def test_sampling_with_the_processor_mentions_the_entities(llama_dir, tok):
    gen = generator(llama_dir, 1)
    prompt = torch.tensor([gen._prompt(DATA)[0]])
    proc = CoverageLogitsProcessor(gen.tokenizer, [ENTITIES], gen.vocab.eos, bonus=50.0)
    torch.manual_seed(0)
    out = gen.model.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
        num_return_sequences=3, max_new_tokens=40, eos_token_id=gen.vocab.eos,
        pad_token_id=gen.vocab.pad, logits_processor=[proc],
    )  # fmt: skip
    assert proc.start == prompt.shape[1]  # the prompt is no part of the text checked
    for seq in out[:, prompt.shape[1] :].tolist():
        text = gen.tokenizer.decode(seq, skip_special_tokens=True)
        assert missing_list(text, ENTITIES) == [], text


def test_what_counts_as_mentioned_is_the_reports_check():
    text = "Born on 26 April 1945 in the US, he speaks English; the airport is 2,776 m high."
    entities = ["1945-04-26", "United States", "English language", "2776.0", "Aarhus"]
    assert missing_list(text, entities) == ["Aarhus"]
    assert missing_entities(text, entities) == 1
    assert entity_surface("Asterix (comicsCharacter)") == "Asterix"
    assert entity_surface('"Aarhus"') == "Aarhus"


def test_the_decoding_switches_are_off_by_default_and_leave_the_fingerprint_alone():
    plain = GenerateConfig()
    assert (plain.coverage_decoding, plain.coverage_max_hold, plain.coverage_bonus) == (
        False, 16, 0.0,
    )  # fmt: skip
    assert not {"coverage_decoding", "coverage_bonus"} & set(plain.decoding())
    on = GenerateConfig(coverage_decoding=True, coverage_bonus=2.0).decoding()
    assert (on["coverage_decoding"], on["coverage_bonus"]) == (True, 2.0)
    # the verdict is on by default and changes the labels a stage made before it existed: it
    # joins the fingerprint when on, and a verdict-free stage stays current when it is off
    assert plain.verdict is True and plain.decoding()["verdict"] is True
    assert "verdict" not in GenerateConfig(verdict=False).decoding()
    with pytest.raises(ValueError):
        GenerateConfig(coverage_max_hold=-1)


@pytest.mark.parametrize("beams", [1, 3])
def test_coverage_retry_adds_covering_beams_after_the_plain_ones(llama_dir, beams):
    """`coverage_retry`: the plain beams all drop the record (the head ends at once), so the
    record is decoded again with coverage decoding; its beams that mention more join after the
    plain ones: the top beam stays the plain one, the chosen text is a covering one. A record
    the plain decoder covers is not decoded again."""
    gen = generator(llama_dir, beams, coverage=True, coverage_retry=True, coverage_bonus=50.0)
    gen.rerank = True
    (row,) = gen.generate_rows([ROW])
    plain_texts = [c["text"] for c in row["candidates"][:beams]]
    (plain,) = generator(llama_dir, beams).generate_rows([ROW])
    assert plain_texts == [c["text"] for c in plain["candidates"]]
    added = row["candidates"][beams:]
    assert added and all(missing_entities(c["text"], ENTITIES) < 3 for c in added)
    assert missing_entities(row["text"], ENTITIES) == min(
        missing_entities(c["text"], ENTITIES) for c in added
    )
    assert gen.retried == 1
    covered = {**ROW, "entities": []}  # nothing to mention: never retried
    gen.generate_rows([covered])
    assert gen.retried == 1
    with pytest.raises(ValueError, match="coverage_retry needs generate.coverage"):
        GenerateConfig(coverage_retry=True)
