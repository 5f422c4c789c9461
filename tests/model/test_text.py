"""The embedded model's tokenizer and text encoder (model.text)."""

from __future__ import annotations

import pytest
import torch

from model.data import VOCABULARY
from model.text import QUICK_TEXT, build_text_encoder, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("text", ["a purple elephant ☃", "ZEBRA!!", "", "日本語のテキスト", "a red circle " * 20])
def test_any_text_tokenizes_into_known_ids(tokenizer, text):
    """Unknown words, symbols and scripts fall back to byte tokens: no error, every id inside the vocabulary."""
    ids = tokenizer(text, padding="max_length", truncation=True, max_length=32).input_ids
    assert len(ids) == 32
    assert all(0 <= i < len(tokenizer) for i in ids)


@pytest.mark.parametrize("text", ["a purple elephant ☃", "日本語のテキスト"])
def test_unknown_text_survives_a_round_trip(tokenizer, text):
    """Byte fallback loses nothing: decoding the ids of an unknown word gives the text back."""
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_every_caption_word_is_one_token(tokenizer):
    """Each word of model.data.VOCABULARY maps to a single token (BOS word EOS)."""
    for word in VOCABULARY:
        assert len(tokenizer(word).input_ids) == 3, word


def test_known_words_differ_from_unknown_ones(tokenizer):
    """A caption word and an unknown word never share a token: "elephant" is split into byte pieces."""
    pieces = tokenizer.tokenize("elephant")
    assert len(pieces) > 1
    assert tokenizer.tokenize("circle") == ["circle</w>"]


def test_text_encoder_gives_one_state_per_position(tokenizer):
    """The encoder's last hidden states are (batch, max_tokens, width): what the UNet's cross-attention reads."""
    torch.manual_seed(0)
    encoder = build_text_encoder(QUICK_TEXT, tokenizer)
    ids = tokenizer(["a red circle", "a purple elephant ☃"], padding="max_length", max_length=32,
                    return_tensors="pt").input_ids
    assert encoder(ids)[0].shape == (2, 32, QUICK_TEXT.width)
