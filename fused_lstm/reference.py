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
    """One direction of one LSTM layer over a whole sequence: nn.LSTM's (per step:
    gates = x_t W_ih^T + h W_hh^T + b_ih + b_hh; i, f, g, o = sigmoid, sigmoid, tanh,
    sigmoid of its quarters; c = f * c + i * g; h = o * tanh(c), then h W_hr^T).

    x: [T, B, I] (batch_sizes None) or packed [N, I] with batch_sizes [T].
    h0: [B, Hout], c0: [B, H]. Returns y ([T, B, Hout] or [N, Hout]), h_n, c_n.
    """
    y, h_n, c_n, _ = lstm_variant_reference(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                            w_hr, reverse, [], 0.0, False, None, None, None)
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


def _layer_norm_rows(v: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LN(v) over the last dimension: (v - mean) / sqrt(var + eps) * weight + bias, var the
    biased variance (nn.LayerNorm's)."""
    return torch.nn.functional.layer_norm(v, (v.shape[-1],), weight, bias, eps)


def lstm_variant_reference(
    x: Tensor, batch_sizes: Optional[Tensor], h0: Tensor, c0: Tensor,
    w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
    w_hr: Optional[Tensor], reverse: bool, norm: List[Tensor], norm_eps: float,
    norm_state: bool, recurrent_mask: Optional[Tensor], zoneout_h: Optional[Tensor],
    zoneout_c: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """One direction of one layer with the options beyond nn.LSTM (the variant op's
    semantics, csrc/ops.cpp; README, "Variants"). Per step t, rows active at t:

        h_in = h_{t-1} * m                       m = recurrent_mask [B, Hout] (or 1)
        a    = LN_ih(x_t W_ih^T) + LN_hh(h_in W_hh^T) + b_ih + b_hh   (LN = id without norm)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
        c^   = f * c_{t-1} + i * g
        n    = LN_c(c^)  (c^ without norm);   c~ = n if norm_state else c^
        h~   = o * tanh(n)  (then h~ W_hr^T with a projection)
        c_t  = z_c * c_{t-1} + (1 - z_c) * c~    h_t = z_h * h_{t-1} + (1 - z_h) * h~

    norm: [] or [ln_ih.weight, ln_ih.bias ([4H]), ln_hh.weight, ln_hh.bias ([4H]),
    ln_c.weight, ln_c.bias ([H])]. zoneout_h [N, Hout] / zoneout_c [N, H] (rows as x's), or
    1-D [Hout] / [H] for every row, or None (z = 0). Returns y, h_n, c_n and the cells
    c_t of every step ([T, B, H] or [N, H], as y)."""
    if batch_sizes is None:
        T, B = x.shape[0], x.shape[1]
        sizes = [B] * T
        steps = [x[t] for t in range(T)]
    else:
        sizes = [int(s) for s in batch_sizes.tolist()]
        steps = list(torch.split(x, sizes, dim=0))
        T = len(sizes)
    offsets = [sum(sizes[:t]) for t in range(T)]

    def step_rows(z: Optional[Tensor], t: int) -> Optional[Tensor]:
        if z is None or z.dim() == 1:
            return z
        return z[offsets[t]:offsets[t] + sizes[t]]

    ln_ih = ln_hh = ln_c = None
    if norm:
        ln_ih, ln_hh, ln_c = (norm[0], norm[1]), (norm[2], norm[3]), (norm[4], norm[5])
    order = range(T - 1, -1, -1) if reverse else range(T)
    h, c = h0, c0
    if reverse and T > 0:
        h, c = h0[: sizes[-1]], c0[: sizes[-1]]
    h_rows: List[Tensor] = []
    c_rows: List[Tensor] = []
    outputs: List[Optional[Tensor]] = [None] * T
    cells: List[Optional[Tensor]] = [None] * T
    for t in order:
        n_rows = sizes[t]
        if n_rows < h.shape[0]:
            h_rows.append(h[n_rows:])
            c_rows.append(c[n_rows:])
            h, c = h[:n_rows], c[:n_rows]
        elif n_rows > h.shape[0]:
            h = torch.cat([h, h0[h.shape[0]:n_rows]])
            c = torch.cat([c, c0[c.shape[0]:n_rows]])
        h_in = h if recurrent_mask is None else h * recurrent_mask[:n_rows]
        gx = steps[t] @ w_ih.t()
        gh = h_in @ w_hh.t()
        if ln_ih is not None:
            gx = _layer_norm_rows(gx, *ln_ih, norm_eps)
            gh = _layer_norm_rows(gh, *ln_hh, norm_eps)
        gates = gx + gh
        if b_ih is not None:
            gates = gates + b_ih + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_hat = f * c + i * g
        n = c_hat if ln_c is None else _layer_norm_rows(c_hat, *ln_c, norm_eps)
        c_new = n if (ln_c is not None and norm_state) else c_hat
        h_new = o * torch.tanh(n)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        z_c, z_h = step_rows(zoneout_c, t), step_rows(zoneout_h, t)
        c = c_new if z_c is None else z_c * c + (1 - z_c) * c_new
        h = h_new if z_h is None else z_h * h + (1 - z_h) * h_new
        outputs[t] = h
        cells[t] = c
    h_n = torch.cat([h] + h_rows[::-1]) if h_rows else h
    c_n = torch.cat([c] + c_rows[::-1]) if c_rows else c
    if T == 0:
        y = x.new_empty(x.shape[:-1] + (h0.shape[-1],))
        cell_seq = x.new_empty(x.shape[:-1] + (c0.shape[-1],))
    elif batch_sizes is None:
        y, cell_seq = torch.stack(outputs), torch.stack(cells)
    else:
        y, cell_seq = torch.cat(outputs), torch.cat(cells)
    return y, h_n, c_n, cell_seq
