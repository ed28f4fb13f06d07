"""Tokenizer: scratch byte-level BPE, special-token order, whitespace policy, save/load."""

from __future__ import annotations

import pytest

from datatuner_core import linearize as lin
from datatuner_core.tokenizer import build_tokenizer, load_tokenizer, special_token_ids

SPECIALS = lin.special_vocabulary(["<subject>", "<predicate>", "<object>"])
CORPUS = [
    "<subject> Alan Bean <predicate> birth place <object> Wheeler, Texas",
    "Alan Bean was born in Wheeler, Texas.",
    "<subject> Aarhus Airport <predicate> city served <object> Aarhus, Denmark",
    "The Aarhus is the airport of Aarhus, Denmark.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("scratch:tiny", CORPUS, SPECIALS, vocab_size=500)


def tokens(tok, text):
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])


def test_special_tokens_follow_the_given_order_after_the_base_vocabulary(tok):
    ids = special_token_ids(tok, SPECIALS)
    assert ids == list(range(ids[0], ids[0] + len(SPECIALS)))
    assert SPECIALS[:4] == ["<data>", "<text>", "<eos>", "<pad>"]
    assert tok.pad_token == "<pad>" and tok.eos_token == "<eos>"
    assert tok.pad_token_id == ids[3] and tok.eos_token_id == ids[2]
    assert len(tok) == ids[-1] + 1


def test_specials_are_never_learnt_as_merges(tok):
    vocab = tok.get_vocab()
    assert not any("subject" in t and t != "<subject>" for t in vocab)


@pytest.mark.parametrize(
    "text",
    [
        "<subject> Alan Bean <predicate> birth place",
        "<subject>Alan Bean<predicate>birth place",
        "<subject>   Alan Bean   <predicate>  birth place",
    ],
)
def test_whitespace_around_special_tokens_does_not_matter(tok, text):
    assert tokens(tok, text) == ["<subject>", "ĠAlan", "ĠBean", "<predicate>", "Ġbirth", "Ġplace"]


def test_word_after_a_marker_has_its_mid_sentence_form(tok):
    in_data = tokens(tok, "<object> Wheeler, Texas")[1:]
    in_text = tokens(tok, "<text> Alan Bean was born in Wheeler, Texas")[-len(in_data) :]
    assert in_data == in_text == tokens(tok, "Wheeler, Texas")
    assert in_data[0] == "ĠWheeler"


def test_unseen_bytes_stay_encodable(tok):
    text = "Zürich — 東京"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids).strip() == text


def test_save_and_reload_with_plain_transformers(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    for again in (load_tokenizer(str(tmp_path)), AutoTokenizer.from_pretrained(tmp_path)):
        text = "<subject>Alan Bean <predicate>  birth place"
        assert again(text)["input_ids"] == tok(text)["input_ids"]
        assert again.pad_token == "<pad>" and again.eos_token == "<eos>"


def test_build_tokenizer_checks_its_inputs():
    with pytest.raises(ValueError, match="base tokens"):
        build_tokenizer("scratch:tiny", CORPUS, ["<subject>"])
    with pytest.raises(ValueError, match="corpus"):
        build_tokenizer("scratch:tiny", None, SPECIALS)
