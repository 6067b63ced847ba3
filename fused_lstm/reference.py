"""A plain-PyTorch LSTM layer with the exact semantics of the fused op.

Used by the tests as an independent implementation, and by FusedLSTM as the
fallback when the compiled extension cannot be loaded. Slow (one small op per
gate per step) but obviously correct, differentiable to any order, and runs on
any device and dtype.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor


def lstm_layer_reference(
    x: Tensor,
    batch_sizes: Optional[Tensor],
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor],
    b_hh: Optional[Tensor],
    w_hr: Optional[Tensor],
    reverse: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One direction of one LSTM layer over a whole sequence.

    x: [T, B, I] (batch_sizes None) or packed [N, I] with batch_sizes [T].
    h0: [B, Hout], c0: [B, H]. Returns y ([T, B, Hout] or [N, Hout]), h_n, c_n.
    """
    if batch_sizes is None:
        T, B = x.shape[0], x.shape[1]
        sizes = [B] * T
        steps = [x[t] for t in range(T)]
    else:
        sizes = [int(s) for s in batch_sizes.tolist()]
        steps = list(torch.split(x, sizes, dim=0))
        T = len(sizes)
    order = range(T - 1, -1, -1) if reverse else range(T)
    h, c = h0, c0
    if reverse and T > 0:  # packed rows join as the walk goes back: start with the shortest
        h, c = h0[: sizes[-1]], c0[: sizes[-1]]
    # Final state of every row, filled as rows finish (packed input).
    h_rows: List[Tensor] = []
    c_rows: List[Tensor] = []
    outputs: List[Optional[Tensor]] = [None] * T
    for t in order:
        n = sizes[t]
        if n < h.shape[0]:  # rows that ended: keep their final state
            h_rows.append(h[n:])
            c_rows.append(c[n:])
            h, c = h[:n], c[:n]
        elif n > h.shape[0]:  # rows that start here (packed, reverse): from h0/c0
            h = torch.cat([h, h0[h.shape[0]:n]])
            c = torch.cat([c, c0[c.shape[0]:n]])
        gates = steps[t] @ w_ih.t() + h @ w_hh.t()
        if b_ih is not None:
            gates = gates + b_ih + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.t()
        outputs[t] = h
    h_n = torch.cat([h] + h_rows[::-1]) if h_rows else h
    c_n = torch.cat([c] + c_rows[::-1]) if c_rows else c
    if T == 0:
        y = x.new_empty(x.shape[:-1] + (h0.shape[-1],))
    elif batch_sizes is None:
        y = torch.stack(outputs)
    else:
        y = torch.cat(outputs)
    return y, h_n, c_n


def split_layer_weights(weights: List[Tensor], has_bias: bool, has_proj: bool,
                        directions: int) -> List[Tuple[Optional[Tensor], ...]]:
    """The layer op's weights list (per direction: w_ih, w_hh, then b_ih, b_hh with a bias,
    then w_hr with a projection) as (w_ih, w_hh, b_ih, b_hh, w_hr) per direction, None
    where absent."""
    per = 2 + (2 if has_bias else 0) + (1 if has_proj else 0)
    if len(weights) != directions * per:
        raise RuntimeError(f"expected {directions * per} weights ({per} per direction), "
                           f"got {len(weights)}")
    out = []
    for d in range(directions):
        w = weights[d * per:(d + 1) * per]
        out.append((w[0], w[1], w[2] if has_bias else None, w[3] if has_bias else None,
                    w[-1] if has_proj else None))
    return out


def lstm_layers_reference(x: Tensor, batch_sizes: Optional[Tensor], h0: Tensor, c0: Tensor,
                          weights: List[Tensor], has_bias: bool, has_proj: bool,
                          bidirectional: bool, reverse: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """One layer, one direction or both, with the layer op's arguments (csrc/ops.cpp):
    y ([..., D * Hout]), h_n [D, B, Hout], c_n [D, B, H]."""
    directions = 2 if bidirectional else 1
    outs = [lstm_layer_reference(x, batch_sizes, h0[d], c0[d], *w,
                                 reverse if directions == 1 else d == 1)
            for d, w in enumerate(split_layer_weights(weights, has_bias, has_proj, directions))]
    y = outs[0][0] if directions == 1 else torch.cat([o[0] for o in outs], dim=-1)
    return y, torch.stack([o[1] for o in outs]), torch.stack([o[2] for o in outs])
