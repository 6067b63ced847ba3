"""FusedLSTM's variants beyond nn.LSTM that change the recurrence (README, "Variants"):
layer norm, zoneout, recurrent dropout, and the cell state of every step. Their argument
checks, the masks each training-mode call draws, and one layer of them on the variant op
(fused_lstm.ops.lstm_variant; formulas in fused_lstm/reference.py, lstm_variant_reference).
All off by default, where FusedLSTM runs the plain layer op as nn.LSTM would.
"""

import math
import numbers
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .ops import lstm_variant

NORM_CELL_FORMS = ("hidden", "state")


def _probability(name: str, value, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} should be a real number in [0, 1), got {value!r} of type "
                        f"{type(value).__name__}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} is {meaning} and should be in [0, 1), got {value!r}")
    return float(value)


def checked(layer_norm, layer_norm_eps, layer_norm_cell, zoneout, recurrent_dropout,
            return_cell_sequence) -> Tuple[bool, float, str, Tuple[float, float], float, bool]:
    """The variant options as (layer_norm, layer_norm_eps, layer_norm_cell, (p_h, p_c),
    recurrent_dropout, return_cell_sequence), or TypeError for a wrong type, ValueError for a
    wrong value (and for an option that would be ignored)."""
    for name, value in (("layer_norm", layer_norm),
                        ("return_cell_sequence", return_cell_sequence)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be a bool, got {value!r} of type "
                            f"{type(value).__name__}")
    if isinstance(layer_norm_eps, bool) or not isinstance(layer_norm_eps, numbers.Real):
        raise TypeError(f"layer_norm_eps should be a positive real number, got "
                        f"{layer_norm_eps!r} of type {type(layer_norm_eps).__name__}")
    if not 0 < layer_norm_eps < math.inf:
        raise ValueError(f"layer_norm_eps should be a positive finite real number, got "
                         f"{layer_norm_eps!r}")
    if not isinstance(layer_norm_cell, str):
        raise TypeError(f"layer_norm_cell should be one of {NORM_CELL_FORMS}, got "
                        f"{layer_norm_cell!r} of type {type(layer_norm_cell).__name__}")
    if layer_norm_cell not in NORM_CELL_FORMS:
        raise ValueError(f"layer_norm_cell should be one of {NORM_CELL_FORMS}, got "
                         f"{layer_norm_cell!r}")
    if not layer_norm and (layer_norm_eps != 1e-5 or layer_norm_cell != "hidden"):
        raise ValueError(
            f"layer_norm_eps={layer_norm_eps!r} and layer_norm_cell={layer_norm_cell!r} "
            "configure layer_norm=True, got layer_norm=False")
    meaning = ("the probability that each unit keeps its previous {} at a step in training "
               "mode")
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2:
            raise ValueError(f"zoneout should be a probability p or a pair (p_h, p_c), got "
                             f"{len(zoneout)} values: {zoneout!r}")
        zoneout = (_probability("zoneout[0] (p_h)", zoneout[0], meaning.format("h")),
                   _probability("zoneout[1] (p_c)", zoneout[1], meaning.format("c")))
    else:
        p = _probability("zoneout", zoneout, meaning.format("h and c"))
        zoneout = (p, p)
    recurrent_dropout = _probability(
        "recurrent_dropout", recurrent_dropout,
        "the probability of zeroing each unit of h before the recurrent product (one mask "
        "per sequence) in training mode")
    return (layer_norm, float(layer_norm_eps), layer_norm_cell, zoneout, recurrent_dropout,
            return_cell_sequence)


def uses_variant_op(module, return_cells: bool) -> bool:
    """Whether this call runs the variant op rather than the plain layer op."""
    return (module.layer_norm or module.zoneout != (0.0, 0.0) or return_cells
            or (module.recurrent_dropout > 0 and module.training))


def _masks(module, x: Tensor, batch: int, out: int):
    """(recurrent_mask, zoneout_h, zoneout_c) of one layer direction, in x's dtype (out: the
    size of h, Hout): drawn from the
    default generator of x's device in that order, in training mode; in eval mode zoneout's
    expectation (the constant p) and no recurrent mask. Zoneout's masks, one value per row
    and unit, are drawn as torch.rand(...) < p: a third cheaper than bernoulli_ on the CPU,
    where drawing them is most of what zoneout adds to a training step (NOTES.md)."""
    rows = x.shape[0] if x.dim() == 2 else x.shape[0] * x.shape[1]
    p_h, p_c = module.zoneout
    hidden, dtype = module.hidden_size, x.dtype
    new = dict(dtype=dtype, device=x.device)
    if not module.training:
        return (None, torch.full((out,), p_h, **new) if p_h > 0 else None,
                torch.full((hidden,), p_c, **new) if p_c > 0 else None)
    p = module.recurrent_dropout
    keep = (torch.empty((batch, out), **new).bernoulli_(1 - p).div_(1 - p) if p > 0 else None)
    z_h = (torch.rand((rows, out), **new) < p_h).to(dtype) if p_h > 0 else None
    z_c = (torch.rand((rows, hidden), **new) < p_c).to(dtype) if p_c > 0 else None
    return keep, z_h, z_c


def run_layer(module, x: Tensor, batch_sizes: Optional[Tensor], h0: Tensor, c0: Tensor,
              weights: List[List[Tensor]], norms: List[List[Tensor]], batch: int):
    """One layer, each direction on the variant op. x: [T, B, I] or packed [N, I]; h0
    [D, B, Hout], c0 [D, B, H]; weights and norms per direction. Returns y [..., D*Hout],
    h_n [D, B, Hout], c_n [D, B, H], cells [..., D*H]."""
    outs = []
    for d, (w, norm) in enumerate(zip(weights, norms)):
        masks = _masks(module, x, batch, h0.shape[-1])
        outs.append(lstm_variant(x, batch_sizes, h0[d], c0[d], w, module.bias,
                                 module.proj_size > 0, d == 1, norm, module.layer_norm_eps,
                                 module.layer_norm_cell == "state", *masks))
    if len(outs) == 1:
        y, h, c, cells = outs[0]
        return y, h.unsqueeze(0), c.unsqueeze(0), cells
    return (torch.cat([o[0] for o in outs], -1), torch.stack([o[1] for o in outs]),
            torch.stack([o[2] for o in outs]), torch.cat([o[3] for o in outs], -1))


def beyond_nn_lstm(module, inference: bool) -> List[str]:
    """The variant options of `module` that an nn.LSTM in its place would silently drop
    (for inference only: those that change eval-mode results), as `name=value` strings."""
    found = []
    if module.layer_norm:
        found.append("layer_norm=True")
    if module.zoneout != (0.0, 0.0):
        found.append(f"zoneout={module.zoneout}")
    if module.recurrent_dropout > 0 and not inference:
        found.append(f"recurrent_dropout={module.recurrent_dropout}")
    if module.return_cell_sequence:
        found.append("return_cell_sequence=True")
    return found
