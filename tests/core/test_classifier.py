"""The fidelity classifier: labels, pair encoding and segments, truncation, metrics, a 2-worker
Ray Train run on WebNLG corruptions that beats the majority-class baseline on the held-out split,
and the saved model reloading with plain `transformers` and `FidelityScorer`."""

from __future__ import annotations

import json
import random

import pytest

from datatuner_core import classifier as clf
from datatuner_core import (
    classifier_metrics,
    classifier_model,
    classifier_pairs,
    classifier_scorer,
    corrupt,
    stage_reader,
    storage,
)
from datatuner_core import linearize as lin
from datatuner_core.config import ClassifierConfig, CorruptConfig
from datatuner_core.ingest import ingest

TINY = (2, 128, 2)  # layers, width, heads
DATA = (
    "<subject> Aarhus Airport <predicate> city served <object> Aarhus, Denmark ; "
    "<subject> Aarhus Airport <predicate> elevation <object> 25.0"
)
TEXT = "Aarhus Airport serves Aarhus, Denmark."


@pytest.fixture(scope="module")
def corruptions(shared_data, tmp_path_factory):
    """A corruption stage from WebNLG 2-triple entries (600 train, 100 dev records): train
    (balanced) and validation (dev, unbalanced: the held-out split); returns (uri, special
    tokens, train rows, validation rows)."""
    root = tmp_path_factory.mktemp("clf-data")
    webnlg = shared_data / "webnlg"
    inputs = {
        "train": str(webnlg / "train" / "2triples"),
        "validation": str(webnlg / "dev" / "2triples"),
    }
    ingest("webnlg", inputs, str(root / "records"), max_records={"train": 600, "validation": 100})
    specials = lin.linearize(str(root / "records"), str(root / "lin"))["extra"]["special_tokens"]
    corrupt.corrupt(
        str(root / "lin"), str(root / "corrupt"), CorruptConfig(per_example=5, balance="upsample")
    )
    rows = stage_reader.read_stage(str(root / "corrupt")).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "validation"]
    return str(root / "corrupt"), specials, train, val


@pytest.fixture(scope="module")
def tok(corruptions):
    _, specials, train, _ = corruptions
    return classifier_pairs.build_classifier_tokenizer(
        "scratch:tiny", classifier_pairs.pairs_of(train), specials, 2000
    )


# ----------------------------------------------------------------------------- no Ray


def test_labels_exactly_the_five_in_order(tok):
    model = classifier_model.ClassifierTask(tokenizer=tok, shape=TINY).build_model()
    assert [model.config.id2label[i] for i in range(5)] == [
        "accurate",
        "value_error",
        "omission",
        "repetition",
        "hallucination",
    ]
    assert model.config.label2id == {label: i for i, label in enumerate(corrupt.LABELS)}
    assert model.config.type_vocab_size == 2 and model.config.num_labels == 5


def test_pair_segments_hand_checked(tok):
    task = classifier_model.ClassifierTask(tokenizer=tok, shape=TINY, max_length=128)
    (ex,) = task.encode([{"linearized": DATA, "text": TEXT, "label": "omission"}])
    ids, types = ex["input_ids"], ex["token_type_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "<data>" and tokens[-1] == "<eos>" and tokens.count("<text>") == 1
    cut = tokens.index("<text>")
    assert types == [0] * cut + [1] * (len(ids) - cut)  # data segment 0, text segment 1
    data_part = [i for i, t in zip(ids, types, strict=True) if t == 0]
    text_part = [i for i, t in zip(ids, types, strict=True) if t == 1]

    def words(s):
        return s.replace("<", " <").replace(">", "> ").split()

    assert words(tok.decode(data_part)) == words(f"<data> {DATA}")
    assert tok.decode(text_part[1:-1]).strip() == TEXT
    assert tok.convert_ids_to_tokens(data_part[:4]) == [
        "<data>",
        "<subject>",
        "ĠAarhus",
        "ĠAirport",
    ]
    assert ex["label"] == classifier_pairs.LABEL2ID["omission"]
    # the tokenizer's own pair template gives the same ids and segments (what a reload uses)
    plain = tok(DATA, TEXT, return_token_type_ids=True)
    assert plain["input_ids"] == ids and plain["token_type_ids"] == types


def test_longest_first_truncation_matches_one_token_at_a_time():
    def slow(la, lb, budget):
        while la + lb > budget:
            if la > lb:
                la -= 1
            else:
                lb -= 1
        return la, lb

    for la in range(0, 30):
        for lb in range(0, 30):
            for budget in (1, 7, 10, 25, 40):
                assert classifier_pairs.longest_first(la, lb, budget) == slow(la, lb, budget), (
                    la,
                    lb,
                    budget,
                )


def test_truncation_is_counted_and_bounded(tok):
    task = classifier_model.ClassifierTask(tokenizer=tok, shape=TINY, max_length=24)
    rows = [
        {"linearized": DATA, "text": TEXT * 5, "label": "repetition"},
        {
            "linearized": "<subject> A <predicate> b <object> C",
            "text": "A b C.",
            "label": "accurate",
        },
    ]
    examples = task.encode(rows)
    assert task.counts["truncated"] == 1 and task.counts["examples"] == 2
    assert len(examples[0]["input_ids"]) == 24 and len(examples[1]["input_ids"]) < 24
    assert task.counts["repetition"] == 1 and task.counts["accurate"] == 1
    with pytest.raises(ValueError, match="unknown label"):
        task.encode([{"linearized": DATA, "text": TEXT, "label": "pronoun_error"}])


def test_lowercase_keeps_special_tokens(tok):
    pattern = classifier_pairs._specials_pattern(["<subject>", "<eatType>"])
    out = classifier_pairs.lower_keep_specials("<eatType> Eat TYPE <subject> Alan Bean", pattern)
    assert out == "<eatType> eat type <subject> alan bean"
    task = classifier_model.ClassifierTask(tokenizer=tok, shape=TINY, lowercase=True)
    (ex,) = task.encode([{"linearized": DATA, "text": TEXT, "label": "accurate"}])
    assert tok.convert_ids_to_tokens(ex["input_ids"][:2]) == ["<data>", "<subject>"]
    assert "aarhus" in tok.decode(ex["input_ids"]) and "Aarhus" not in tok.decode(ex["input_ids"])


def test_collate_pads_dynamically_and_loss_runs(tok):
    import torch

    task = classifier_model.ClassifierTask(tokenizer=tok, shape=TINY)
    rows = [
        {"linearized": DATA, "text": TEXT, "label": "accurate"},
        {"linearized": DATA, "text": "Aarhus.", "label": "omission"},
    ]
    batch = task.collate(task.encode(rows))
    lengths = batch["attention_mask"].sum(1).tolist()
    assert batch["input_ids"].shape[1] == max(lengths) and lengths[0] > lengths[1]
    assert (batch["input_ids"][1, lengths[1] :] == tok.pad_token_id).all()
    assert batch["labels"].tolist() == [0, 2]
    model = task.build_model()
    loss = task.loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    sums = task.eval_sums(model.eval(), batch)
    assert sum(v for k, v in sums.items() if k.startswith("cm_")) == 2 and sums["n"] == 2


def test_freeze_layers_stops_the_backward_above_the_frozen_layers(tok):
    """`freeze_layers=1` of 2: the embeddings and layer 0 get no gradient and do not change in a
    step, layer 1 and the head do; the loss is the unfrozen model's (freezing changes no
    forward); too many layers is a clear error."""
    import torch

    rows = [
        {"linearized": DATA, "text": TEXT, "label": "accurate"},
        {"linearized": DATA, "text": "Aarhus.", "label": "omission"},
    ]
    torch.manual_seed(0)
    full = classifier_model.ClassifierTask(tokenizer=tok, shape=TINY).build_model()
    task = classifier_model.ClassifierTask(tokenizer=tok, shape=TINY, freeze_layers=1)
    torch.manual_seed(0)
    model = task.build_model()
    batch = task.collate(task.encode(rows))
    full.train(False), model.train(False)  # no dropout: the same forward
    assert torch.equal(task.loss(model, batch), task.loss(full, batch))
    counts = task.parameter_counts
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    assert counts["trainable_parameters"] == counts["parameters"] - embeddings - layer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    task.loss(model, batch).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert (p.grad is None) == frozen, name
        if frozen:
            assert torch.equal(p, before[name]), name
        else:  # a trainable parameter moves unless its gradient happened to be all zero
            assert not torch.equal(p, before[name]) or p.grad.abs().sum() == 0, name
    with pytest.raises(ValueError, match="freeze_layers=3 but the model has 2 layers"):
        classifier_model.ClassifierTask(tokenizer=tok, shape=TINY, freeze_layers=3).build_model()


def test_metrics_from_confusion_by_hand():
    cm = [[5, 1, 0, 0, 0], [2, 3, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 4, 0], [0, 0, 0, 0, 1]]
    m = classifier_metrics.metrics_from_confusion(cm)
    assert m["n"] == 16 and m["accuracy"] == pytest.approx(13 / 16)
    assert m["per_class"]["accurate"]["precision"] == pytest.approx(5 / 7)
    assert m["per_class"]["accurate"]["recall"] == pytest.approx(5 / 6)
    assert m["per_class"]["omission"]["support"] == 0  # absent class: not in the macro average
    f1_acc = 2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6)
    f1_ve = 2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5)
    assert m["macro_f1"] == pytest.approx((f1_acc + f1_ve + 1 + 1) / 4)
    assert (m["majority_label"], m["majority_baseline"]) == ("accurate", 6 / 16)
    report = classifier_metrics.format_report(m)
    assert (
        "| accurate | 0.714 | 0.833 |" in report
        and "majority-class baseline (accurate): 0.3750" in report
    )


def test_rule_counts_by_hand():
    import torch

    rules = torch.tensor(
        [classifier_pairs.RULE2ID["entity_cut"]] * 3 + [classifier_pairs.RULE2ID["original"], -1]
    )
    pred = torch.tensor([0, 1, 1, 0, 4])  # accurate, value_error, value_error, accurate, (unknown)
    sums = classifier_metrics.rule_sums(rules, pred)
    by_rule = classifier_metrics.by_rule_from_sums(sums)
    assert set(by_rule) == {"entity_cut", "original"}  # the unknown rule (-1) is left out
    cut = by_rule["entity_cut"]
    assert (cut["label"], cut["pairs"]) == ("value_error", 3)
    assert cut["caught"] == pytest.approx(2 / 3)
    assert cut["predicted"] == {"accurate": 1, "value_error": 2, "omission": 0,
                                "repetition": 0, "hallucination": 0}  # fmt: skip
    assert by_rule["original"]["caught"] == 1.0
    assert classifier_pairs.rule_ids([{"rule": "entity_swap"}, {"rule": "new_rule"}]) == [
        classifier_pairs.RULE2ID["entity_swap"], -1,
    ]  # fmt: skip
    assert classifier_pairs.rule_ids([{"label": "accurate"}]) is None
    m = classifier_metrics.metrics_from_confusion(
        [[1, 0, 0, 0, 0], [1, 2, 0, 0, 0]] + [[0] * 5] * 3
    )
    report = classifier_metrics.format_report({**m, "by_rule": by_rule})
    assert "| entity_cut | value_error | 3 | 0.667 | 1 | 2 | 0 | 0 | 0 |" in report


def test_architecture_without_segments_gets_no_token_type_ids(tok, tmp_path):
    """A local 'pretrained' base (type_vocab_size=1, like roberta-base) loads by path with the
    five labels, and its pairs carry no token_type_ids."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
    )
    transformers.BertModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert not classifier_model.has_segments(str(tmp_path))
    base_tok = classifier_pairs.build_classifier_tokenizer(
        str(tmp_path), None, ["<data>", "<subject>"]
    )
    task = classifier_model.ClassifierTask(tokenizer=base_tok, base=str(tmp_path))
    assert task.segments is False
    (ex,) = task.encode([{"linearized": DATA, "text": TEXT, "label": "accurate"}])
    assert "token_type_ids" not in ex
    model = task.build_model()
    assert model.config.id2label[4] == "hallucination" and model.config.type_vocab_size == 1
    logits = classifier_model.forward_logits(model, task.collate([ex]))
    assert tuple(logits.shape) == (1, 5)


# ----------------------------------------------------------------------------- Ray Train


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(ray_local, corruptions, tmp_path_factory):
    uri, specials, _, _ = corruptions
    out = tmp_path_factory.mktemp("clf-root") / "models" / "classifier" / "v1"
    config = ClassifierConfig(
        epochs=1, batch_size=16, lr=1e-3, warmup_steps=20, max_length=128, max_steps=200, workers=2
    )
    card = clf.train_classifier(uri, str(out), config, specials, shape=TINY, vocab_size=2000)
    return card, out


def test_tiny_classifier_beats_majority_baseline(trained, corruptions):
    card, out = trained
    _, _, train, val = corruptions
    m = card["eval"]
    assert m["n"] == len(val) and sum(map(sum, m["confusion"])) == len(val)
    assert card["metrics"]["steps"] == 200 and card["workers"] == 2
    assert card["data"]["encoding"]["examples"] == len(train)
    counts = {label: sum(r["label"] == label for r in val) for label in corrupt.LABELS}
    assert m["majority_baseline"] == pytest.approx(max(counts.values()) / len(val))
    print(
        f"held-out accuracy {m['accuracy']:.3f} macro-F1 {m['macro_f1']:.3f} "
        f"majority {m['majority_baseline']:.3f}"
    )
    assert m["accuracy"] > m["majority_baseline"] + 0.05
    assert m["macro_f1"] > 0.25  # predicting the majority class gives about 0.09
    saved = json.loads((out / clf.EVAL_FILE).read_text())
    assert saved["confusion"] == m["confusion"]
    assert "Confusion matrix" in (out / clf.REPORT_FILE).read_text()
    # every held-out pair is counted once under the rule that made it, summed over both ranks
    rules = {rule: sum(r["rule"] == rule for r in val) for rule in {r["rule"] for r in val}}
    assert {rule: v["pairs"] for rule, v in m["by_rule"].items()} == rules
    assert all(v["label"] == corrupt.RULE_LABELS[rule] for rule, v in m["by_rule"].items())
    caught = sum(v["predicted"][v["label"]] for v in m["by_rule"].values())
    assert caught == sum(m["confusion"][k][k] for k in range(5))  # the diagonal, split by rule
    assert saved["by_rule"] == m["by_rule"]
    assert "| original | accurate |" in (out / clf.REPORT_FILE).read_text()


def test_saved_model_reloads_with_plain_transformers(trained, corruptions):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, out = trained
    _, _, _, val = corruptions
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(5)] == list(corrupt.LABELS)
    rows = [
        r
        for r in random.Random(0).sample(val, 20)
        if len(tok(r["linearized"], r["text"])["input_ids"]) <= 128
    ]
    rows = rows[:8]
    assert len(rows) >= 4
    scorer = classifier_scorer.FidelityScorer(str(out))
    scored = scorer.score([(r["linearized"], r["text"]) for r in rows], batch_size=3)
    for row, result in zip(rows, scored, strict=True):
        enc = tok(row["linearized"], row["text"], return_tensors="pt", return_token_type_ids=True)
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits[0], -1)
        assert result["label"] == corrupt.LABELS[int(probs.argmax())]
        assert result["p_accurate"] == pytest.approx(float(probs[0]), abs=1e-4)
        assert sum(result["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_scorer_agrees_with_trainer_eval_and_keeps_input_order(trained, corruptions):
    card, out = trained
    _, _, _, val = corruptions
    evaluation = card["metrics"]["evaluations"][-1]
    assert evaluation["step"] == card["metrics"]["best"]["step"]  # the exported checkpoint
    assert card["eval"]["confusion"] == evaluation["confusion"]  # Ray eval == FidelityScorer eval
    assert card["eval"]["accuracy"] == pytest.approx(evaluation["accuracy"])
    # the scorer's pass over the split gives the same per-rule counts as the trainer's sums
    again = classifier_scorer.evaluate_classifier(str(out), val, batch_size=32)
    assert again["confusion"] == card["eval"]["confusion"]
    assert again["by_rule"] == card["eval"]["by_rule"]
    scorer = classifier_scorer.FidelityScorer(str(out))
    pairs = [(r["linearized"], r["text"]) for r in val[:40]]
    forward = scorer.score(pairs, batch_size=7)
    backward = scorer.score(pairs[::-1], batch_size=16)
    assert [r["label"] for r in forward] == [r["label"] for r in backward[::-1]]
    assert [r["p_accurate"] for r in forward] == pytest.approx(
        [r["p_accurate"] for r in backward[::-1]], abs=1e-5
    )


def test_scorer_loads_from_object_storage(trained):
    _, out = trained
    uri = "memory://clf-test/models/classifier/v1"
    storage.upload_dir(str(out), uri)
    scorer = classifier_scorer.FidelityScorer(uri)
    local = classifier_scorer.FidelityScorer(str(out))
    pairs = [(DATA, TEXT), (DATA, TEXT + " " + TEXT)]
    assert [r["label"] for r in scorer.score(pairs)] == [r["label"] for r in local.score(pairs)]
    assert scorer.settings["max_length"] == 128 and scorer.settings["segments"] is True
