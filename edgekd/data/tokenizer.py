"""The text tokenizer: a lower-case WordPiece vocabulary trained on the training split only, shipped as ``vocab.txt``.

Training uses Hugging Face ``tokenizers`` (the ``text`` extra). What ships is a plain ``vocab.txt`` (one token per
line, its id the line number) and ``tokenizer.json`` (the settings below): the device-side encoder in
``runner.py`` is pure Python over those two files, so the board needs neither ``tokenizers`` nor edgekd, and a test
checks that both encoders give the same ids. ``max_len`` comes from the training lengths (their 99th percentile,
capped) so a few long phrases don't make every inference pay for padding; longer texts are cut at the right.

Ids: ``[PAD]`` is 0 (models derive their mask as ``ids != 0``), ``[UNK]`` is 1; no [CLS]/[SEP] are added.
Trained tokenizers are kept in the dataset cache (``DataCache``: private, checked), keyed by the training texts
and the settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekd.data.cache import DataCache
from edgekd.data.inputs import TOKEN_DTYPE
from edgekd.errors import EdgekdError, MissingDependencyError

PAD, UNK = "[PAD]", "[UNK]"
VOCAB_FILE, SETTINGS_FILE = "vocab.txt", "tokenizer.json"
DEFAULT_VOCAB_SIZE = 8000
LENGTH_PERCENTILE = 99.0
MAX_LEN_CAP = 128
MIN_LEN = 4
FORMAT = "edgekd-wordpiece-1"


@dataclass(frozen=True)
class TokenizerSettings:
    """What the device-side encoder must repeat exactly (``tokenizer.json``)."""

    vocab_size: int
    max_len: int
    lowercase: bool = True
    strip_accents: bool = True
    continuing_prefix: str = "##"
    max_input_chars_per_word: int = 100
    pad_token: str = PAD
    unk_token: str = UNK
    truncation: str = "right"
    format: str = FORMAT
    cls_token: str | None = None  # set for a BERT teacher's vocabulary: [CLS] ids... [SEP], as it was fine-tuned
    sep_token: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class TextTokenizer:
    """A trained vocabulary and its settings: ``encode(texts) -> int32 [N, max_len]``."""

    def __init__(self, vocab: list[str], settings: TokenizerSettings, source: str = "the training split only"
                 ) -> None:
        wanted = [t for t in (settings.unk_token, settings.cls_token, settings.sep_token) if t]
        if vocab[:1] != [PAD] or not set(wanted) <= set(vocab):
            raise EdgekdError(f"a tokenizer vocabulary must start with {PAD} and hold {', '.join(wanted)}",
                              "retrain the tokenizer, or give a BERT-style WordPiece vocab.txt")
        self.vocab, self.settings, self.source = vocab, settings, source
        self._hf = _hf_tokenizer(vocab, settings)
        index = {t: i for i, t in enumerate(vocab)}
        self._ends = ([index[settings.cls_token]], [index[settings.sep_token]]) if settings.cls_token else ([], [])

    @property
    def max_len(self) -> int:
        return self.settings.max_len

    def vocab_text(self) -> str:
        return "".join(token + "\n" for token in self.vocab)

    def vocab_sha256(self) -> str:
        return hashlib.sha256(self.vocab_text().encode("utf-8")).hexdigest()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text (between [CLS] and [SEP] when the settings name them), untruncated and unpadded."""
        first, last = self._ends
        return [first + enc.ids + last for enc in self._hf.encode_batch(list(texts))]

    def encode(self, texts: list[str]) -> np.ndarray:
        """int32 [N, max_len]: ids cut at max_len, padded with [PAD] (0)."""
        return self.pad(self.token_ids(texts))

    def pad(self, token_ids: list[list[int]]) -> np.ndarray:
        """``token_ids`` as int32 [N, max_len]: cut at max_len, padded with [PAD] (0)."""
        out = np.zeros((len(token_ids), self.max_len), TOKEN_DTYPE)
        last = self._ends[1]
        for row, ids in zip(out, token_ids, strict=True):
            ids = ids[: self.max_len - len(last)] + last if len(ids) > self.max_len else ids  # [SEP] stays last
            row[: len(ids)] = ids
        return out

    def save(self, folder: Path) -> dict[str, str]:
        """Write ``vocab.txt`` and ``tokenizer.json`` into ``folder``; returns file name -> sha256."""
        (folder / VOCAB_FILE).write_text(self.vocab_text(), encoding="utf-8")
        (folder / SETTINGS_FILE).write_text(json.dumps(self.settings.to_dict(), indent=1, sort_keys=True) + "\n",
                                            encoding="utf-8")
        return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in (VOCAB_FILE, SETTINGS_FILE)}

    def describe(self) -> dict:
        """The manifest's / describe()'s ``tokenizer`` record (file hashes are added where the files are written)."""
        return {**self.settings.to_dict(), "vocab_file": VOCAB_FILE, "settings_file": SETTINGS_FILE,
                "vocab_sha256": self.vocab_sha256(), "trained_on": self.source,
                "trainer": f"tokenizers {_tokenizers().__version__} WordPiece"}


def load(folder: Path) -> TextTokenizer:
    """A tokenizer saved by ``TextTokenizer.save``."""
    try:
        settings = TokenizerSettings(**json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8")))
        vocab = (folder / VOCAB_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    except (OSError, ValueError, TypeError) as exc:
        raise EdgekdError(f"cannot read the tokenizer in {folder}: {exc}", "delete it to retrain") from None
    return TextTokenizer(vocab, settings)


def train_tokenizer(texts: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE, cache: DataCache | None = None
                    ) -> TextTokenizer:
    """A WordPiece tokenizer trained on ``texts`` (the training split), from the cache when trained before."""
    if cache is None:
        return _train(texts, vocab_size)
    key = _cache_key(texts, vocab_size)
    entry = cache.entry("tokenizers", key)
    if entry.is_dir():
        return load(entry)
    tokenizer = _train(texts, vocab_size)
    with cache.staging(entry) as work:
        tokenizer.save(work)
    return tokenizer


def _cache_key(texts: list[str], vocab_size: int) -> str:
    digest = hashlib.sha256(f"{FORMAT}|{vocab_size}|{_tokenizers().__version__}|".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


def _train(texts: list[str], vocab_size: int) -> TextTokenizer:
    tk = _tokenizers()
    settings = TokenizerSettings(vocab_size=vocab_size, max_len=MIN_LEN)
    hf = _hf_tokenizer(None, settings)
    trainer = tk.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK],
                                           continuing_subword_prefix=settings.continuing_prefix, show_progress=False)
    hf.train_from_iterator(texts, trainer)
    with tempfile.TemporaryDirectory(prefix="edgekd-wordpiece-") as tmp:
        hf.model.save(tmp)
        vocab = (Path(tmp) / VOCAB_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    lengths = [len(enc.ids) for enc in hf.encode_batch(texts)]
    settings = TokenizerSettings(vocab_size=len(vocab), max_len=choose_max_len(lengths))
    return TextTokenizer(vocab, settings)


def from_vocab(tokens: list[str], lowercase: bool, texts: list[str], max_len_cap: int, source: str
               ) -> TextTokenizer:
    """A given vocabulary (a Hugging Face teacher's vocab.txt), so student and teacher read the same ids: [CLS] and
    [SEP] around each text when the vocabulary has them, ``max_len`` from the training texts within the teacher's
    position embeddings."""
    ends = {"cls_token": "[CLS]", "sep_token": "[SEP]"} if {"[CLS]", "[SEP]"} <= set(tokens) else {}
    probe = TextTokenizer(list(tokens), TokenizerSettings(len(tokens), MIN_LEN, lowercase, lowercase, **ends), source)
    max_len = min(choose_max_len([len(ids) for ids in probe.token_ids(texts)]), max_len_cap)
    return TextTokenizer(list(tokens), dataclasses.replace(probe.settings, max_len=max_len), source)


def choose_max_len(lengths: list[int]) -> int:
    """The 99th percentile of the training lengths in tokens, within [MIN_LEN, MAX_LEN_CAP]."""
    wanted = math.ceil(float(np.percentile(lengths, LENGTH_PERCENTILE))) if lengths else MIN_LEN
    return int(min(MAX_LEN_CAP, max(MIN_LEN, wanted)))


def _hf_tokenizer(vocab: list[str] | None, settings: TokenizerSettings):
    """A ``tokenizers.Tokenizer`` with BERT's normaliser (clean text, CJK spacing, accents, lower case) and
    pre-tokeniser (whitespace and punctuation), the runner's encoder's twin."""
    tk = _tokenizers()
    model_args = dict(unk_token=settings.unk_token, continuing_subword_prefix=settings.continuing_prefix,
                      max_input_chars_per_word=settings.max_input_chars_per_word)
    model = (tk.models.WordPiece({t: i for i, t in enumerate(vocab)}, **model_args) if vocab is not None
             else tk.models.WordPiece(**model_args))
    hf = tk.Tokenizer(model)
    hf.normalizer = tk.normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                  strip_accents=settings.strip_accents,
                                                  lowercase=settings.lowercase)
    hf.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    return hf


def _tokenizers():
    try:
        import tokenizers  # lazy: optional [text] extra
    except ImportError:
        raise MissingDependencyError("tokenizers", "text", "text data") from None
    return tokenizers
