"""One padded forward over a micro-batch of keys, and the chosen tokens' log-probs without a (N, V) tensor.

Each key is one row: ``prompt + seg_0 + seg_1 + ...``; every segment sees the prompt and its own earlier
tokens only (block-causal mask), and positions restart at ``len(prompt)`` for every segment, as if each
followed the prompt alone. Rows are right-padded to the longest; padding attends to itself only.

The vocabulary projection runs only on the rows that predict segment tokens, in chunks: under autograd each
chunk is checkpointed, so the full-vocabulary fp32 logits of one chunk exist at a time (forward and
backward), never those of every candidate token at once (``chosen_logprobs``).

Works for any HF causal LM and for a peft-wrapped one (LoRA): the decoder and the output projection are
found through ``get_base_model()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from agentrl.learner.batch import Key

PACKED_ATTENTION = ("sdpa", "eager")  # implementations that take an arbitrary 4D additive mask


def _core(model: nn.Module) -> nn.Module:
    """The causal LM itself: a peft model's base (its LoRA layers stay in place and active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder, output projection) of a causal LM, unwrapping a peft model."""
    core = _core(model)
    return getattr(core, core.base_model_prefix), core.get_output_embeddings()


def check_attention(model: nn.Module) -> None:
    """The packed layout needs a 4D mask: refuse attention kernels that ignore one, with the fix."""
    impl = getattr(_core(model).config, "_attn_implementation", None)
    if impl not in PACKED_ATTENTION:
        raise ValueError(
            f"attention implementation {impl!r} cannot take the learner's block-causal packing mask "
            f"(a prompt shared by several candidates); use one of {PACKED_ATTENTION} "
            "(attn_implementation in the train config; sdpa runs the memory-efficient kernel on CUDA)"
        )


def _lp_chunk(logits: Tensor, targets: Tensor, inv_temp: Tensor) -> Tensor:
    z = logits.float() * inv_temp[:, None]  # (n, V)
    return z.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(z, dim=-1)  # (n,)


def chosen_logprobs(hidden: Tensor, head: nn.Module, targets: Tensor, inv_temp: Tensor, chunk: int = 1024) -> Tensor:
    """(N,) log softmax(head(hidden) / T)[target] in chunks of ``chunk`` rows; checkpointed under autograd."""
    out = []
    for s in range(0, hidden.shape[0], chunk):
        h, t, it = hidden[s : s + chunk], targets[s : s + chunk], inv_temp[s : s + chunk]
        if torch.is_grad_enabled():
            out.append(checkpoint(lambda h_, t_, it_: _lp_chunk(head(h_), t_, it_), h, t, it, use_reentrant=False))
        else:
            out.append(_lp_chunk(head(h), t, it))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


@dataclass
class KeyOutputs:
    """Per key of the micro-batch: ``outputs[i]`` (candidate log-probs under softmax(seq/T), or generated
    token log-probs at T), ``entropy[i]`` over its candidates (0 for generated keys), ``value[i]``."""

    outputs: list[Tensor]
    entropy: Tensor  # (n,)
    value: Tensor | None  # (n,)


@dataclass
class _Layout:
    ids: Tensor  # (n, L)
    pos: Tensor  # (n, L)
    seg: Tensor  # (n, L) -1 prompt, c >= 0 segment c, -2 padding
    offs: Tensor  # (n, L) index within the prompt / segment
    pred_row: Tensor  # (S,) flat (row * L + col) of the hidden state predicting each segment token
    target: Tensor  # (S,) the segment tokens
    inv_temp: Tensor  # (S,)
    seg_id: Tensor  # (S,) global segment number (for sums per candidate)
    last_prompt: Tensor  # (n,) flat index of each row's last prompt token (value head)


def _layout(keys: Sequence[Key], temperature: float) -> _Layout:
    n, L = len(keys), max(k.tokens for k in keys)
    ids = torch.zeros((n, L), dtype=torch.long)
    pos = torch.zeros((n, L), dtype=torch.long)
    seg = torch.full((n, L), -2, dtype=torch.long)
    offs = torch.zeros((n, L), dtype=torch.long)
    pred, target, inv_temp, seg_id, last = [], [], [], [], []
    g = 0
    for i, k in enumerate(keys):
        tp = len(k.prompt)
        ids[i, :tp] = torch.tensor(k.prompt)
        pos[i, :tp] = offs[i, :tp] = torch.arange(tp)
        seg[i, :tp] = -1
        last.append(i * L + tp - 1)
        col = tp
        it = 1.0 / temperature if k.generated else 1.0
        for c, s in enumerate(k.segments):
            m = len(s)
            ids[i, col : col + m] = torch.tensor(s)
            offs[i, col : col + m] = torch.arange(m)
            pos[i, col : col + m] = tp + torch.arange(m)
            seg[i, col : col + m] = c
            # the row predicting token j: the last prompt token for j = 0, else the segment's token j-1
            pred.extend([i * L + tp - 1] + [i * L + col + j for j in range(m - 1)])
            target.extend(s)
            inv_temp.extend([it] * m)
            seg_id.extend([g] * m)
            g += 1
            col += m
    return _Layout(ids, pos, seg, offs, torch.tensor(pred), torch.tensor(target), torch.tensor(inv_temp),
                   torch.tensor(seg_id), torch.tensor(last))


def packing_mask(seg: Tensor, offs: Tensor, dtype: torch.dtype) -> Tensor:
    """(n, 1, L, L) additive mask from (n, L) segment ids and offsets, built on their device."""
    sq, sk = seg[:, :, None], seg[:, None, :]  # (n, L, 1), (n, 1, L)
    oq, ok = offs[:, :, None], offs[:, None, :]
    to_prompt = (sk == -1) & (sq != -2) & ((sq != -1) | (ok <= oq))  # prompt keys: causal in the prompt
    same_seg = (sq == sk) & (sq >= 0) & (ok <= oq)  # a segment sees its own earlier tokens
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]  # padding attends to itself
    allowed = to_prompt | same_seg | eye  # (n, L, L)
    return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def key_forward(
    model: nn.Module,
    keys: Sequence[Key],
    *,
    temperature: float,
    value_head: nn.Module | None = None,
    chunk: int = 1024,
) -> KeyOutputs:
    """Run ``keys`` as one padded batch; see the module docstring. ``temperature`` is the rollout's."""
    decoder, head = model_parts(model)
    dev = next(model.parameters()).device
    dtype = next(p for p in decoder.parameters() if p.is_floating_point()).dtype
    lay = _layout(keys, temperature)
    seg, offs = lay.seg.to(dev), lay.offs.to(dev)
    hidden = decoder(
        input_ids=lay.ids.to(dev), attention_mask=packing_mask(seg, offs, dtype), position_ids=lay.pos.to(dev),
        use_cache=False,
    ).last_hidden_state  # (n, L, H)
    flat = hidden.reshape(-1, hidden.shape[-1])  # (n*L, H)
    tok = chosen_logprobs(flat[lay.pred_row.to(dev)], head, lay.target.to(dev), lay.inv_temp.to(dev), chunk)  # (S,)
    n_seg = int(lay.seg_id[-1]) + 1 if lay.seg_id.numel() else 0
    seq = torch.zeros(n_seg, dtype=tok.dtype, device=dev).index_add_(0, lay.seg_id.to(dev), tok)  # (n_seg,)
    outputs, ents = [], []
    s0 = t0 = 0
    for k in keys:
        if k.generated:
            m = len(k.segments[0])
            outputs.append(tok[t0 : t0 + m])
            ents.append(tok.new_zeros(()))
        else:
            lp = torch.log_softmax(seq[s0 : s0 + len(k.segments)] / temperature, dim=0)  # (C,)
            outputs.append(lp)
            ents.append(-(lp.exp() * lp).sum())
        s0 += len(k.segments)
        t0 += sum(len(s) for s in k.segments)
    value = None
    if value_head is not None:
        value = value_head(flat[lay.last_prompt.to(dev)].detach().float())[:, 0]  # (n,)
    return KeyOutputs(outputs, torch.stack(ents), value)
