"""Text teachers: the default transformer edgekd trains from scratch, and a user's local Hugging Face model.

Both keep the text model contract (``edgekd.text.models``): one int32/int64 ``input_ids`` tensor [batch, len],
``[PAD]`` = 0, logits out, the mask built inside. Both expose ``hidden_taps`` / ``attention_taps`` (identity
modules seeing each layer's hidden states / attention probabilities), which TinyBERT transfer (``edgekd.text.kd``)
taps by name.

Loading a Hugging Face directory runs none of its code and reads nothing off the network: the directory is checked
as plain files first (config.json parsed as JSON: ``auto_map`` / custom code refused; weights must be safetensors:
a ``pytorch_model.bin`` or other pickle is refused, never opened), then transformers is imported with
``HF_HUB_OFFLINE``, ``local_files_only=True``, ``trust_remote_code=False`` and ``use_safetensors=True``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.data.text_table import TeacherVocabulary
from edgekd.errors import EdgekdError
from edgekd.models.arch_libraries import import_torchvision
from edgekd.text.models import padding_mask
from edgekd.text.models.transformer import TextTransformer

# The default teacher: 4 layers of width 128 (4 heads of 32): about twice the depth and width of the largest
# student the default budgets pick, small enough to train from scratch on a few CPU cores.
DEFAULT_TEXT_TEACHER = "text_transformer_teacher"
DEFAULT_TEXT_TEACHER_CONFIG: dict[str, int] = {"width": 128, "layers": 4, "heads": 4}

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack",
                   "model.ckpt.index", "adapter_model.bin")
CODE_KEYS = ("auto_map", "custom_pipelines")


def default_text_teacher(vocab_size: int, num_classes: int, max_len: int) -> nn.Module:
    """An untrained BERT-style teacher (``DEFAULT_TEXT_TEACHER_CONFIG``) for the teacher stage to train and cache."""
    return TextTransformer(vocab_size, num_classes, max_len, **DEFAULT_TEXT_TEACHER_CONFIG)


@dataclass(frozen=True)
class TeacherVocab:
    """The WordPiece vocabulary a Hugging Face teacher was trained with: the text pipeline tokenizes with it for
    teacher and student alike (``[PAD]`` is id 0, checked)."""

    path: Path
    lowercase: bool
    tokens: tuple[str, ...]  # id = position, as the text tokenizer takes them

    @property
    def size(self) -> int:
        return len(self.tokens)


class HFTextTeacher(nn.Module):
    """A Hugging Face sequence classifier behind the text model contract."""

    def __init__(self, model: nn.Module, vocab: TeacherVocab, max_len: int) -> None:
        super().__init__()
        self.model = model.eval()
        self.vocab = vocab
        self.max_len = max_len  # the longest sequence its position embeddings take
        self.num_labels = int(model.config.num_labels)
        layers = int(model.config.num_hidden_layers)
        self.hidden_taps = nn.ModuleList(nn.Identity() for _ in range(layers + 1))
        self.attention_taps = nn.ModuleList(nn.Identity() for _ in range(layers))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        attention_mask = padding_mask(input_ids, torch.int64)
        want_attention = any(tap._forward_hooks for tap in self.attention_taps)  # noqa: SLF001 - tapped: KD asks
        out = self.model(input_ids=input_ids.long(), attention_mask=attention_mask, output_hidden_states=True,
                         output_attentions=want_attention)
        for tap, hidden in zip(self.hidden_taps, out.hidden_states, strict=True):
            tap(hidden)
        for tap, probs in zip(self.attention_taps, out.attentions or (), strict=False):
            tap(probs)
        return out.logits


def load_hf_teacher(path: str | os.PathLike, *, vocab_path: str | os.PathLike | None = None) -> HFTextTeacher:
    """A user's local Hugging Face sequence-classification directory as a teacher (see the module docstring)."""
    root = Path(path)
    config = check_hf_directory(root)
    vocab = read_teacher_vocab(Path(vocab_path) if vocab_path else root / "vocab.txt", root)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        AutoModelForSequenceClassification = import_transformers().AutoModelForSequenceClassification
    except ImportError:
        raise EdgekdError("a Hugging Face teacher needs the package 'transformers', which is not installed",
                          "pip install transformers safetensors") from None
    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(root), local_files_only=True, trust_remote_code=False, use_safetensors=True,
                attn_implementation="eager", output_loading_info=True)
    except ImportError as exc:  # transformers imports its model classes lazily, and they import their own deps
        cause = exc.__cause__ or exc  # the class's own import error, e.g. a dependency that fails to load
        raise EdgekdError(f"transformers cannot import the model class of {root}: {_first_line(cause)}",
                          "repair the Python environment (e.g. a torchvision built for another torch: reinstall "
                          "the one matching torch, or uninstall it)") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise EdgekdError(f"cannot load the Hugging Face model in {root}: {_first_line(exc)}",
                          "give a directory saved with save_pretrained(safe_serialization=True) from a "
                          "*ForSequenceClassification model") from None
    untrained = [k for k in info.get("missing_keys", []) if "classifier" in k or "score" in k]
    if untrained:
        raise EdgekdError(f"the Hugging Face model in {root} has no trained classification head (missing "
                          f"{', '.join(sorted(untrained)[:3])}): its logits would be random",
                          "fine-tune it for your labels and save it with save_pretrained, then pass that directory")
    max_len = int(config.get("max_position_embeddings") or 512)
    return HFTextTeacher(model, vocab, max_len)


def import_transformers() -> Any:
    """``import transformers``, torchvision first through edgekd's shim: transformers imports torchvision whenever it
    is installed, and PyPI's torchvision is a CUDA build whose compiled ops fail to load beside a CPU torch."""
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import_torchvision()
        except (ImportError, OSError, RuntimeError):
            pass  # transformers' model import then fails and load_hf_teacher says how to repair the environment
    import transformers  # lazy: optional [text] extra

    return transformers


def teacher_vocabulary(teacher: str | None) -> TeacherVocabulary | None:
    """The vocabulary of ``--teacher DIR`` when DIR is a Hugging Face model directory (checked as plain files, nothing
    imported), else None: the tokenizer is then trained on the training split."""
    if not teacher or not Path(teacher).is_dir():
        return None
    root = Path(teacher)
    config = check_hf_directory(root)
    vocab = read_teacher_vocab(root / "vocab.txt", root)
    return TeacherVocabulary(vocab.tokens, vocab.lowercase, int(config.get("max_position_embeddings") or 512),
                             f"the teacher's vocabulary ({root.name}/vocab.txt)")


def check_hf_directory(root: Path) -> dict[str, Any]:
    """Check a Hugging Face directory as plain files (nothing imported or unpickled); returns its config."""
    if not root.is_dir():
        raise EdgekdError(f"Hugging Face teacher '{root}' is not a directory",
                          "pass the directory save_pretrained wrote (config.json + model.safetensors + vocab.txt)")
    config_file = root / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EdgekdError(f"cannot read {config_file}: {type(exc).__name__}",
                          "pass a directory with the config.json save_pretrained writes") from None
    if not isinstance(config, dict):
        raise EdgekdError(f"{config_file} is not a JSON object", "pass the config.json save_pretrained writes")
    code = [key for key in CODE_KEYS if config.get(key)]
    if code:
        raise EdgekdError(f"the Hugging Face model in {root} asks to run its own code ({', '.join(code)} in "
                          "config.json); edgekd never runs code from a model directory",
                          "use a model of a standard transformers architecture (BERT, DistilBERT, ...), or export "
                          "it to ONNX yourself and pass the .onnx file as the teacher")
    explicit = str(config.get("transformers_weights") or "")
    if explicit and not explicit.endswith(SAFE_WEIGHTS):
        raise EdgekdError(f"config.json in {root} points at weights '{explicit}', which are not safetensors",
                          "re-save the model with save_pretrained(safe_serialization=True)")
    if (root / "adapter_config.json").exists():
        raise EdgekdError(f"{root} holds a PEFT adapter, not a whole model",
                          "merge the adapter into its base model and save that with save_pretrained")
    if not any((root / name).is_file() for name in SAFE_WEIGHTS):
        pickled = [name for name in PICKLED_WEIGHTS if (root / name).exists()]
        found = f"only {', '.join(pickled)} (pickle-based: loading it could run code)" if pickled else "none"
        raise EdgekdError(f"the Hugging Face model in {root} has no safetensors weights (found {found})",
                          "re-save it with model.save_pretrained(DIR, safe_serialization=True) and pass DIR")
    return config


def read_teacher_vocab(vocab_file: Path, root: Path) -> TeacherVocab:
    """The teacher's WordPiece vocab.txt (one token a line, ``[PAD]`` first) and its lower-casing setting."""
    try:
        tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"cannot read the teacher's vocabulary {vocab_file}: {type(exc).__name__}",
                          "put the model's WordPiece vocab.txt in its directory, or pass its path") from None
    if not tokens or tokens[0] != "[PAD]":
        raise EdgekdError(f"the first token of {vocab_file} is {tokens[0] if tokens else 'missing'!r}, not '[PAD]'",
                          "edgekd pads with id 0: use a BERT-style WordPiece vocabulary with [PAD] first")
    lowercase = True
    tokenizer_config = root / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            lowercase = bool(json.loads(tokenizer_config.read_text(encoding="utf-8")).get("do_lower_case", True))
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            pass  # unreadable tokenizer settings: BERT's default (uncased) applies
    return TeacherVocab(vocab_file, lowercase, tuple(tokens))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or warnings from transformers while loading: edgekd reports what matters itself (a missing
    head is an error above); the user's settings come back afterwards."""
    from transformers.utils import logging as hf_logging  # lazy: optional [text] extra

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
