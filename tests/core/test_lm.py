"""The LM: sequence assembly, state ids, loss masks, truncation, batching, model, loss."""

from __future__ import annotations

import pytest

from datatuner_core import linearize as lin
from datatuner_core import lm, stage_reader
from datatuner_core.ingest import ingest
from datatuner_core.tokenizer import build_tokenizer
from datatuner_core.training_data import plan_batches

TWO_TRIPLES = (
    "<subject> Aarhus Airport <predicate> city served <object> Aarhus, Denmark ; "
    "<subject> Aarhus Airport <predicate> elevation <object> 25.0"
)
TEXT = "Aarhus Airport serves Aarhus, Denmark."


@pytest.fixture(scope="module")
def airport(shared_data, tmp_path_factory):
    """(linearized train rows, special tokens) of WebNLG train 1triples/Airport.xml."""
    root = tmp_path_factory.mktemp("airport")
    xml = shared_data / "webnlg" / "train" / "1triples" / "Airport.xml"
    ingest("webnlg", str(xml), str(root / "records"), split="train")
    manifest = lin.linearize(str(root / "records"), str(root / "lin"))
    rows = stage_reader.read_stage(str(root / "lin")).to_pylist()
    return rows, manifest["extra"]["special_tokens"]


@pytest.fixture(scope="module")
def tok(airport):
    rows, specials = airport
    corpus = [r["linearized"] for r in rows] + [t for r in rows for t in r["references"]]
    return build_tokenizer("scratch:tiny", corpus, specials, vocab_size=1000)


def as_tokens(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_fine_states_hand_checked(tok):
    ex = lm.encode_example(tok, TWO_TRIPLES, TEXT, "fine", 256)
    pairs = list(zip(as_tokens(tok, ex["input_ids"]), as_tokens(tok, ex["token_type_ids"])))
    text_at = [t for t, _ in pairs].index("<text>")
    data_part = [(t, s) for t, s in pairs[:text_at]]
    words = [(tok.convert_tokens_to_string([t]).strip(), s) for t, s in data_part]
    words = [(w, s) for w, s in words if w]  # a lone space token (" ;" is unseen in Airport)
    assert words[:12] == [
        ("<data>", "<data>"),
        ("<subject>", "<subject>"),
        ("Aarhus", "<subject>"),
        ("Airport", "<subject>"),
        ("<predicate>", "<predicate>"),
        ("city", "<predicate>"),
        ("served", "<predicate>"),
        ("<object>", "<object>"),
        ("Aarhus", "<object>"),
        (",", "<object>"),
        ("Denmark", "<object>"),
        (";", "<object>"),  # the state carries over the separator
    ]
    assert words[12:] == [
        ("<subject>", "<subject>"),
        ("Aarhus", "<subject>"),
        ("Airport", "<subject>"),
        ("<predicate>", "<predicate>"),
        *[(w, "<predicate>") for w, _ in words[16:-4]],
        ("<object>", "<object>"),
        *[(w, "<object>") for w, _ in words[-3:]],
    ]
    assert "".join(w for w, _ in words[-3:]) == "25.0"
    assert all(s == "<text>" for _, s in pairs[text_at:])  # <text>, the text and <eos>
    assert pairs[-1][0] == "<eos>"
    assert tok.decode(ex["input_ids"][text_at + 1 : -1]).strip() == TEXT


def test_coarse_states_only_data_and_text(tok):
    fine = lm.encode_example(tok, TWO_TRIPLES, TEXT, "fine", 256)
    coarse = lm.encode_example(tok, TWO_TRIPLES, TEXT, "coarse", 256)
    assert coarse["input_ids"] == fine["input_ids"]
    text_at = fine["input_ids"].index(tok.convert_tokens_to_ids("<text>"))
    states = as_tokens(tok, coarse["token_type_ids"])
    assert states == ["<data>"] * text_at + ["<text>"] * (len(states) - text_at)


def test_loss_only_on_text_and_eos(tok):
    ex = lm.encode_example(tok, TWO_TRIPLES, TEXT, "fine", 256)
    text_at = ex["input_ids"].index(tok.convert_tokens_to_ids("<text>"))
    assert ex["labels"][: text_at + 1] == [lm.IGNORE] * (text_at + 1)
    assert ex["labels"][text_at + 1 :] == ex["input_ids"][text_at + 1 :]
    assert ex["labels"][-1] == tok.eos_token_id
    labelled = [i for i in ex["labels"] if i != lm.IGNORE]
    assert tok.decode(labelled, skip_special_tokens=True).strip() == TEXT


def test_prompt_is_the_training_prefix(tok):
    ex = lm.encode_example(tok, TWO_TRIPLES, TEXT, "fine", 256)
    prompt = lm.encode_prompt(tok, TWO_TRIPLES, "fine", 256)
    n = len(prompt["input_ids"])
    assert prompt["input_ids"] == ex["input_ids"][:n]
    assert prompt["token_type_ids"] == ex["token_type_ids"][:n]
    assert as_tokens(tok, prompt["input_ids"][-1:]) == ["<text>"]
    assert prompt["truncated"] is False


def test_a_prompt_longer_than_its_room_keeps_its_first_data_tokens_and_says_so(tok):
    full = lm.encode_prompt(tok, TWO_TRIPLES, "fine", 256)
    cut = lm.encode_prompt(tok, TWO_TRIPLES, "fine", 5)
    assert cut["truncated"] is True and len(cut["input_ids"]) == 5 + 2
    assert cut["input_ids"][:6] == full["input_ids"][:6]
    assert cut["token_type_ids"][:6] == full["token_type_ids"][:6]
    assert as_tokens(tok, cut["input_ids"][-1:]) == ["<text>"]


def test_truncation_cuts_the_text_first_and_keeps_eos(tok):
    long_text = " ".join([TEXT] * 40)
    full = lm.encode_example(tok, TWO_TRIPLES, TEXT, "fine", 512)
    vocab = lm.default_vocab(tok)
    data_ids = tok(TWO_TRIPLES, add_special_tokens=False)["input_ids"]
    text_ids = tok(long_text, add_special_tokens=False)["input_ids"]
    ex, cut = lm.assemble(vocab, data_ids, text_ids, "fine", 64)
    assert cut == "text" and len(ex["input_ids"]) == 64
    assert ex["input_ids"][-1] == tok.eos_token_id and ex["labels"][-1] == tok.eos_token_id
    text_at = full["input_ids"].index(vocab.text)
    assert ex["input_ids"][: text_at + 1] == full["input_ids"][: text_at + 1]  # data intact

    ex, cut = lm.assemble(vocab, data_ids * 10, text_ids, "fine", 64)
    assert cut == "data" and len(ex["input_ids"]) == 64
    labelled = [i for i in ex["labels"] if i != lm.IGNORE]
    assert len(labelled) == lm.MIN_TEXT_TOKENS + 1  # text kept, plus <eos>


def test_encode_rows_one_example_per_reference_and_counts(tok, airport):
    rows, specials = airport
    examples, counts = lm.encode_rows(tok, rows, specials, "fine", 40)
    assert len(examples) == counts["examples"] == sum(len(r["references"]) for r in rows)
    assert counts["truncated_text"] > 0  # 40 tokens is short for some Airport texts
    assert all(
        len(e["input_ids"]) <= 40 and e["input_ids"][-1] == tok.eos_token_id for e in examples
    )
    first = lm.encode_example(tok, rows[0]["linearized"], rows[0]["references"][0], "fine", 40)
    assert examples[0] == first


def test_collate_pads_with_pad_and_ignore(tok):
    a = lm.encode_example(tok, TWO_TRIPLES, TEXT, "fine", 256)
    b = lm.encode_example(tok, "<subject> X <predicate> y <object> Z", "X is Z.", "fine", 256)
    batch = lm.collate_lm([a, b], tok.pad_token_id)
    n, m = len(a["input_ids"]), len(b["input_ids"])
    assert batch["input_ids"].shape == (2, n)
    assert batch["input_ids"][1, m:].tolist() == [tok.pad_token_id] * (n - m)
    assert batch["token_type_ids"][1, m:].tolist() == [tok.pad_token_id] * (n - m)
    assert batch["labels"][1, m:].tolist() == [lm.IGNORE] * (n - m)
    assert batch["attention_mask"].sum(1).tolist() == [n, m]
    assert lm.collate_lm([a, b], tok.pad_token_id, pad_to=300)["input_ids"].shape == (2, 300)
    with pytest.raises(ValueError, match="pad_to"):
        lm.collate_lm([a, b], tok.pad_token_id, pad_to=5)


def test_bucketed_batches_cover_everything_once_and_pad_less(tok, airport):
    rows, specials = airport
    examples, _ = lm.encode_rows(tok, rows, specials, "fine", 256)
    lengths = [len(e["input_ids"]) for e in examples]
    bucketed = plan_batches(lengths, 16, seed=3, chunk=8)
    plain = plan_batches(lengths, 16, seed=3, bucketed=False)
    for plan in (bucketed, plain):
        assert sorted(i for b in plan for i in b) == list(range(len(examples)))
    dynamic_pad = sum(max(lengths[i] for i in b) * len(b) for b in bucketed) - sum(lengths)
    split_max_pad = max(lengths) * len(lengths) - sum(lengths)
    assert dynamic_pad < 0.25 * split_max_pad
    assert bucketed != plan_batches(lengths, 16, seed=4, chunk=8)  # reshuffled per seed
    assert bucketed == plan_batches(lengths, 16, seed=3, chunk=8)  # deterministic


def test_scratch_shapes(tok):
    model = lm.build_lm("scratch:tiny", tok)
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_positions) == (4, 256, 4, 512)
    assert c.vocab_size == len(tok)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    with pytest.raises(ValueError, match="scratch"):
        lm.build_lm("scratch:huge", tok)


def test_forward_loss_is_nll_over_labels_and_uses_states(tok):
    import torch

    from datatuner_core.state_lm import StateLM

    torch.manual_seed(0)
    model = lm.build_lm("scratch:tiny", tok, shape=(2, 64, 2)).eval()
    a = lm.encode_example(tok, TWO_TRIPLES, TEXT, "fine", 256)
    b = lm.encode_example(tok, "<subject> X <predicate> y <object> Z", "X is Z.", "fine", 256)
    batch = lm.collate_lm([a, b], tok.pad_token_id)
    with torch.no_grad():
        out = lm.forward_lm(model, batch)
        sums = lm.LMTask(tokenizer=tok).eval_sums(StateLM(model), batch)
        coarse = lm.collate_lm(
            [lm.encode_example(tok, TWO_TRIPLES, TEXT, "coarse", 256), b], tok.pad_token_id
        )
        other = lm.forward_lm(model, coarse).logits
    labelled = sum(len([x for x in e["labels"][1:] if x != lm.IGNORE]) for e in (a, b))
    assert sums["tokens"] == labelled
    assert sums["nll"] / sums["tokens"] == pytest.approx(float(out.loss), rel=1e-5)
    assert not torch.allclose(other[0], out.logits[0])  # the state embedding is used
    assert torch.allclose(other[1], out.logits[1], atol=1e-6)  # same states, same logits
