"""FusedLSTM's keyword-only options beyond nn.LSTM (README, API): their argument checks,
the initialisation options' formulas, and weight drop. All off by default, where
FusedLSTM is exactly nn.LSTM (the same draws, values and results).

Gate order i, f, g, o, H rows each, in every layer direction's weights and biases.
"""

import math
import numbers
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def checked(forget_bias, chrono_init, weight_drop,
            bias: bool) -> Tuple[float, Optional[float], float]:
    """(forget_bias, chrono_init, weight_drop) as floats, or the exception for a bad one
    (TypeError for a wrong type, ValueError for a wrong value); messages give the value as
    it was passed."""
    for name, value in (("forget_bias", forget_bias), ("chrono_init", chrono_init)):
        if value is None and name == "chrono_init":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} should be a real number"
                            f"{' or None' if name == 'chrono_init' else ''}, "
                            f"got {value!r} of type {type(value).__name__}")
    if isinstance(weight_drop, bool) or not isinstance(weight_drop, numbers.Real):
        raise TypeError(f"weight_drop should be a real number in [0, 1), got "
                        f"{weight_drop!r} of type {type(weight_drop).__name__}")
    if not 0 <= weight_drop < 1:
        raise ValueError("weight_drop is the probability of zeroing each element of the "
                         "recurrent weights weight_hh_l{k} in training mode and should be "
                         f"in [0, 1), got {weight_drop!r}")
    if not math.isfinite(forget_bias):
        raise ValueError(f"forget_bias should be a finite real number, got {forget_bias!r}")
    if chrono_init is not None and not 2 < chrono_init < math.inf:
        raise ValueError("chrono_init is T_max, the longest time dependency expected, and "
                         "should be a finite real number greater than 2 (u is drawn from "
                         f"Uniform(1, T_max - 1)), got {chrono_init!r}")
    if forget_bias != 0 and chrono_init is not None:
        raise ValueError(
            f"forget_bias={forget_bias!r} and chrono_init={chrono_init!r} cannot be combined: "
            "chrono initialisation sets the forget gate's bias itself (log u); give one")
    if not bias:
        if forget_bias != 0:
            raise ValueError(f"forget_bias={forget_bias!r} needs bias=True (it is added to "
                             "the forget gate's bias), got bias=False")
        if chrono_init is not None:
            raise ValueError(f"chrono_init={chrono_init!r} needs bias=True (it sets the "
                             "input and forget gates' biases), got bias=False")
    return (float(forget_bias), None if chrono_init is None else float(chrono_init),
            float(weight_drop))


def initialise_biases(module) -> None:
    """The initialisation options, after (and on top of) nn.LSTM's initialisation of
    `module` (a FusedLSTM): with them off, nothing more is drawn or changed.
    forget_bias b: bias_ih[H:2H] += b. chrono_init T_max: u ~ Uniform(1, T_max - 1) per
    hidden unit, bias_ih[H:2H] = log u, bias_ih[0:H] = -log u, bias_hh[0:2H] = 0."""
    if not module.bias or (module.forget_bias == 0 and module.chrono_init is None):
        return
    H = module.hidden_size
    with torch.no_grad():
        for names in module._all_weights:
            b_ih = getattr(module, next(n for n in names if n.startswith("bias_ih")))
            b_hh = getattr(module, next(n for n in names if n.startswith("bias_hh")))
            if module.chrono_init is not None:
                log_u = b_ih.new_empty(H).uniform_(1.0, module.chrono_init - 1.0).log_()
                b_ih[H:2 * H] = log_u
                b_ih[0:H] = -log_u
                b_hh[0:2 * H] = 0
            else:
                b_ih[H:2 * H] += module.forget_bias


def drop_recurrent_weights(weights: List[List[Tensor]], p: float) -> List[List[Tensor]]:
    """Weight drop (AWD-LSTM's DropConnect) for one training-mode call: each layer
    direction's weight_hh (index 1 of its weights) replaced by F.dropout(weight_hh, p), the
    masks drawn from the default generator of the weights' device in parameter order (l0,
    l0_reverse, l1, ...), before any dropout between layers. Autograd takes the gradients
    back through the masks to whatever the weights were (a parameter, a parametrization)."""
    return [[F.dropout(w, p, training=True) if k == 1 else w for k, w in enumerate(ws)]
            for ws in weights]
