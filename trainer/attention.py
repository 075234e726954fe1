"""Variable-length attention for packed rows: no [T, T] mask, ever.

Packed training rows hold several sequences back to back (`trainer.packing`). Instead of a dense
block-diagonal mask (O(T^2) memory: 4 GiB of float32 for one 32k-token row), attention runs on
each sequence's own span of the flattened token stream, causal inside it:

- `cu_seq_lens` [S + 1] int32: where each segment starts in the flattened [B * T] stream (a row's
  padding is one more segment), `max_length` the longest segment. These are the names transformers
  uses for flash-attention's varlen kwargs (`DataCollatorWithFlattening`), so the same forward call
  works with `flash_attention_2`/`_3` when a model runs on those;
- otherwise the model runs on `VARLEN` ("varlen_sdpa"), registered here with transformers: on CUDA
  in half precision, `torch.nn.attention.varlen.varlen_attn` (flash-attention varlen); elsewhere
  (CPU, float32) one causal `scaled_dot_product_attention` per segment, whose fused kernels keep
  memory linear in the segment length. Cost: sum of squared segment lengths, not T^2.

Anything that is not a packed forward (generation with a KV cache, left padding) goes to
transformers' own SDPA attention with its usual mask, so a model switched to `VARLEN` samples as
before. Without explicit `cu_seq_lens`, segments are found where `position_ids` restart.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

log = logging.getLogger(__name__)
_varlen_failed: list[bool] = []  # set once torch's varlen_attn failed here: don't retry every layer

VARLEN = "varlen_sdpa"
NATIVE_VARLEN = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
"""Implementations that take `cu_seq_lens_*` themselves (transformers' flash-attention path)."""


def segments_from_position_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """`cu_seq_lens` [S + 1] int32 of the flattened [B * T] stream: a segment starts at each
    position id that does not continue the previous one (+1), and at the start of every row."""
    flat = position_ids.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1] + 1
    starts[:: position_ids.shape[-1]] = True
    bounds = torch.nonzero(starts).flatten()
    end = torch.tensor([flat.numel()], device=flat.device)
    return torch.cat([bounds, end]).to(torch.int32)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seq_lens: torch.Tensor,
                      max_length: int, scaling: float | None = None) -> torch.Tensor:
    """Causal attention inside each segment of a flattened stream: q [N, Hq, D], k/v [N, Hkv, D]
    (Hq a multiple of Hkv) -> [N, Hq, D]. `cu_seq_lens` [S + 1] segment starts, last entry N."""
    gqa = q.shape[1] != k.shape[1]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and not _varlen_failed:
        try:
            from torch.nn.attention.varlen import varlen_attn

            cu = cu_seq_lens.to(device=q.device, dtype=torch.int32)
            return varlen_attn(q, k, v, cu, cu, max_length, max_length, scale=scaling,
                               window_size=(-1, 0), enable_gqa=gqa)
        except (ImportError, RuntimeError, ValueError) as e:  # an unsupported GPU or shape
            log.warning("torch varlen_attn failed (%s); using one SDPA call per segment", e)
            _varlen_failed.append(True)
    out = torch.empty_like(q)
    bounds = cu_seq_lens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b == a:
            continue
        # [n, H, D] -> [1, H, n, D], the layout SDPA takes
        qs, ks, vs = (x[a:b].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling, enable_gqa=gqa)
        out[a:b] = o[0].transpose(0, 1)
    return out


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function (q [B, Hq, T, D], k/v [B, Hkv, T, D] -> [B, T, Hq, D]).

    The packed path needs no mask and keys as long as queries (no cache); it is taken when
    `cu_seq_lens_q` is given or `position_ids` restart inside a row. All else is plain SDPA."""
    b, _, t, _ = query.shape
    packed = attention_mask is None and key.shape[2] == t and t > 1
    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if packed and cu_seq_lens is None:
        position_ids = kwargs.get("position_ids")
        if position_ids is not None and position_ids.shape[-1] == t:
            found = segments_from_position_ids(position_ids.expand(b, t))
            cu_seq_lens = found if found.numel() > b + 1 else None
    if not packed or cu_seq_lens is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if kwargs.get("sliding_window") is not None:
        raise ValueError("varlen attention has no sliding-window support; this layer has one")
    if dropout:
        raise ValueError("varlen attention has no dropout; train with attention dropout 0")
    max_length = kwargs.get("max_length_q") or int(cu_seq_lens.diff().max())
    flat = [x.transpose(1, 2).reshape(b * t, x.shape[1], x.shape[3]) for x in (query, key, value)]
    out = segment_attention(*flat, cu_seq_lens, int(max_length), scaling)
    return out.view(b, t, query.shape[1], query.shape[3]), None


def varlen_mask(*, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """transformers mask function for `VARLEN`: no mask without padding (the attention finds the
    segments itself), else SDPA's usual mask (generation with left padding)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return sdpa_mask(attention_mask=attention_mask, **kwargs)


AttentionInterface.register(VARLEN, varlen_attention)
AttentionMaskInterface.register(VARLEN, varlen_mask)


def use_varlen_attention(model: torch.nn.Module) -> str:
    """Switch `model` (a transformers model, or a peft model around one) to `VARLEN`, unless it
    already runs an implementation that takes `cu_seq_lens` itself; return the one in use.
    Idempotent. Models with sliding-window layers are refused (ValueError)."""
    config = model.config
    current = config._attn_implementation
    if current in NATIVE_VARLEN or current == VARLEN:
        return current
    if any(getattr(m, "sliding_window", None) for m in model.modules()):
        raise ValueError("the model has sliding-window attention layers; varlen packing does not "
                         "support them: train it with attn_implementation='flash_attention_2'")
    config._attn_implementation = VARLEN
    return VARLEN
