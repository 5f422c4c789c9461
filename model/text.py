"""The conditioning side: a CLIP tokenizer built from the captions' vocabulary and a small CLIP text encoder.

The tokenizer is CLIP's byte-level BPE (Radford et al. 2021, after GPT-2): every byte is a token, so any text, in any
script, tokenizes without an unknown token; merges then make each word of `model.data.VOCABULARY` a single token.
Words outside the vocabulary ("elephant", "☃") fall back to byte pieces, which the model has rarely or never seen:
they degrade the picture gracefully and never crash.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from model.data import VOCABULARY

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
WORD_END = "</w>"


@dataclass(frozen=True)
class TextConfig:
    """Shape of the text encoder; its last hidden states are what the UNet's cross-attention reads."""

    width: int = 64  # hidden size = the UNet's cross_attention_dim
    layers: int = 2  # transformer layers
    heads: int = 4  # attention heads
    mlp: int = 256  # width of the feed-forward layer
    max_tokens: int = 32  # positions, BOS and EOS included; the longest caption is about 20 tokens


QUICK_TEXT = TextConfig(width=32, layers=1, heads=2, mlp=64)
"""A throwaway encoder for tests."""


def _bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character map of byte-level BPE (GPT-2's `encoder.py`, also used by CLIP)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the best-ranked adjacent pair until none is in `ranks`."""
    while len(pieces) > 1:
        rank, k = min((ranks.get(pair, len(ranks)), k) for k, pair in enumerate(zip(pieces, pieces[1:], strict=False)))
        if rank == len(ranks):
            break
        pieces = [*pieces[:k], pieces[k] + pieces[k + 1], *pieces[k + 2:]]
    return pieces


def vocabulary(words: Iterable[str] = VOCABULARY) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json and merges.txt contents: every byte (alone and word-final), each of `words`, BOS and EOS.

    For each word, whatever the merges so far leave of it is joined left to right by new merges, ranked after all
    earlier ones: they cannot change how an earlier word is cut, and make this one a single token. Every merge result
    enters the vocabulary, so whatever BPE leaves of any text is always a token.
    """
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + WORD_END for c in byte_chars]
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        pieces = _bpe([*word[:-1], word[-1] + WORD_END], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks.setdefault(pair, len(ranks))
            tokens.append(pair[0] + pair[1])
            pieces = [pair[0] + pair[1], *pieces[2:]]
    tokens = [*dict.fromkeys(tokens), BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, list(ranks)


def build_tokenizer(max_tokens: int = TextConfig.max_tokens, words: Iterable[str] = VOCABULARY) -> CLIPTokenizer:
    """A CLIPTokenizer whose single-token words are `words`, read from a vocab.json and merges.txt written to a
    temporary folder; any other text falls back to byte-level pieces, so nothing is unknown."""
    vocab, merges = vocabulary(words)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        return CLIPTokenizer.from_pretrained(folder, model_max_length=max_tokens)


def build_text_encoder(cfg: TextConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A fresh CLIPTextModel of the given shape (random weights; seed torch before calling)."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.width,
            intermediate_size=cfg.mlp,
            num_attention_heads=cfg.heads,
            num_hidden_layers=cfg.layers,
            max_position_embeddings=cfg.max_tokens,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
