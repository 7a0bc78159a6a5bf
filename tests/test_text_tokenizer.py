"""The text tokenizer: trained on training texts, cached, and repeated exactly by the runner's pure-Python encoder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edgekd import runner
from edgekd.data.cache import DataCache
from edgekd.data.tokenizer import PAD, UNK, load, train_tokenizer

SST2 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "text" / "sst2"
# Made up to hit every rule: case, accents, punctuation (ASCII and Unicode), CJK, controls, odd whitespace, numbers,
# long words, words split into ## pieces, and words never seen in training.
CORPUS = [
    "It's a charming, often affecting journey!", "Unflinchingly bleak -- and desperate...",
    "Café crème brûlée: naïve façade, Ærøskøbing", "«Quoted» “smart” ‘quotes’ — em dash … ellipsis",
    "tabs\tand\nnewlines\r\nand\u00a0non-breaking\u2003spaces", "zero\u200bwidth and \x00nul and \ufffdreplacement",
    "中文字符 mixed with English 日本語", "prices: $5.99, 100% sure; 3+4=7 & a|b ^ c~d `e`",
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "ΣΊΣΥΦΟΣ ΟΔΥΣΣΕΥΣ greek capitals",
    "x" * 150, "", "   ", "Ünïcödé ÀÉÎÕÜ", "emoji 😀 and symbols ©®™ ±×÷", "unseenword qwzxv jjjjjkkkk",
]


def _train_texts() -> list[str]:
    rng = np.random.default_rng(0)
    words = ["good", "bad", "movie", "film", "charming", "boring", "plot", "acting", "great", "awful", "journey",
             "café", "naïve", "!", ",", "...", "it's", "often", "affecting", "unflinchingly", "bleak"]
    return [" ".join(rng.choice(words, size=int(rng.integers(2, 12)))) for _ in range(400)] + CORPUS[:4]


def _runner_encoder(tok) -> runner.WordPieceEncoder:
    return runner.WordPieceEncoder(tok.vocab, tok.settings.to_dict())


def test_tokenizer_ids_pad_and_cache(tmp_path: Path) -> None:
    texts = _train_texts()
    cache = DataCache(tmp_path / "cache")
    tok = train_tokenizer(texts, vocab_size=300, cache=cache)
    assert tok.vocab[:2] == [PAD, UNK] and len(tok.vocab) <= 300
    x = tok.encode(["Good movie!", "", "x" * 150])
    assert x.dtype == np.int32 and x.shape == (3, tok.max_len)
    assert (x[1] == 0).all() and list(x[2][:2]) == [1, 0]  # empty -> all [PAD]; an over-long word -> one [UNK]
    assert tok.token_ids(["good movie!"])[0] == [tok.vocab.index(w) for w in ("good", "movie", "!")]
    entry = next((tmp_path / "cache" / "datasets" / "tokenizers").iterdir())
    again = train_tokenizer(texts, vocab_size=300, cache=cache)  # from the cache: same vocabulary and settings
    assert again.vocab == tok.vocab and again.settings == tok.settings
    assert load(entry).vocab_sha256() == tok.vocab_sha256()


def test_max_len_from_training_lengths() -> None:
    tok = train_tokenizer(["a b c d e f g h i j"] * 299 + ["a " * 500], vocab_size=100)
    assert tok.max_len == 10  # the 99th percentile, not the one 500-token outlier


def test_runner_encoder_gives_the_training_side_ids() -> None:
    tok = train_tokenizer(_train_texts(), vocab_size=300)
    enc = _runner_encoder(tok)
    for text in CORPUS:
        assert enc.ids(text) == tok.token_ids([text])[0], text
    assert np.array_equal(np.concatenate([enc.encode(t) for t in CORPUS]), tok.encode(CORPUS))


@pytest.mark.skipif(not (SST2 / "train.csv").is_file(), reason="the shared SST-2 copy is not here")
def test_runner_encoder_parity_on_sst2_sentences() -> None:
    with open(SST2 / "train.csv", encoding="utf-8") as fh:
        train = [row["text"] for row in csv.DictReader(fh)][:20000]
    with open(SST2 / "test.csv", encoding="utf-8") as fh:
        test = [row["text"] for row in csv.DictReader(fh)]
    tok = train_tokenizer(train, vocab_size=4000)
    enc = _runner_encoder(tok)
    assert [enc.ids(t) for t in test] == tok.token_ids(test)
