"""nn.LSTM's argument checks, with its exception types and messages, for FusedLSTM.

check_input, get_expected_hidden_size, get_expected_cell_size, check_hidden_size,
check_forward_args and permute_hidden are nn.LSTM's own helpers, with its meaning (code
written for nn.LSTM calls them); the underscored ones are what FusedLSTM.forward runs.
The class is a mixin: it reads the module's input_size, hidden_size, proj_size,
num_layers, bidirectional, batch_first and _current_weights().
"""

from typing import Optional, Tuple

import torch
from torch import Tensor


class NNLSTMChecks:
    def check_input(self, input: Tensor, batch_sizes: Optional[Tensor]) -> None:
        self._check_input(input, batch_sizes, self._current_weights()[0][0])

    def _check_input(self, input: Tensor, batch_sizes: Optional[Tensor], w: Tensor) -> None:
        """check_input against w, the first weight as forward reads it."""
        if input.dtype != w.dtype and not torch.is_autocast_enabled(input.device.type):
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). "
                f"Convert input: input.to({w.dtype}), or convert model: model.to({input.dtype})")
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if input.size(-1) != self.input_size:
            raise RuntimeError("input.size(-1) must be equal to input_size. "
                               f"Expected {self.input_size}, got {input.size(-1)}")
        if input.device != w.device:
            raise RuntimeError(f"Input and parameter tensors are not at the same device, found "
                               f"input tensor at {input.device} and parameter tensor at {w.device}")

    def _expected_state_size(self, input: Tensor, batch_sizes: Optional[Tensor],
                             size: int) -> Tuple[int, int, int]:
        if batch_sizes is not None:
            batch = int(batch_sizes[0]) if batch_sizes.numel() else 0
        else:
            batch = input.size(0) if self.batch_first else input.size(1)
        return (self.num_layers * (2 if self.bidirectional else 1), batch, size)

    def get_expected_hidden_size(self, input: Tensor,
                                 batch_sizes: Optional[Tensor]) -> Tuple[int, int, int]:
        """(layers x directions, batch, proj_size or hidden_size): h0's expected size for
        `input` as forward receives it (batch first if batch_first)."""
        return self._expected_state_size(input, batch_sizes, self.proj_size or self.hidden_size)

    def get_expected_cell_size(self, input: Tensor,
                               batch_sizes: Optional[Tensor]) -> Tuple[int, int, int]:
        """(layers x directions, batch, hidden_size): c0's expected size."""
        return self._expected_state_size(input, batch_sizes, self.hidden_size)

    def check_hidden_size(self, hx: Tensor, expected_hidden_size: Tuple[int, int, int],
                          msg: str = "Expected hidden size {}, got {}") -> None:
        if hx.size() != expected_hidden_size:
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.size())))

    def check_forward_args(self, input: Tensor, hidden: Tuple[Tensor, Tensor],
                           batch_sizes: Optional[Tensor]) -> None:
        self.check_input(input, batch_sizes)
        self._check_state_sizes(input, hidden, batch_sizes)

    def _check_state_sizes(self, input: Tensor, hidden: Tuple[Tensor, Tensor],
                           batch_sizes: Optional[Tensor]) -> None:
        self.check_hidden_size(hidden[0], self.get_expected_hidden_size(input, batch_sizes),
                               "Expected hidden[0] size {}, got {}")
        self.check_hidden_size(hidden[1], self.get_expected_cell_size(input, batch_sizes),
                               "Expected hidden[1] size {}, got {}")

    def permute_hidden(self, hx: Tuple[Tensor, Tensor],
                       permutation: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(h, c) with their batch rows put in `permutation`'s order (None: unchanged)."""
        if permutation is None:
            return hx
        return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)

    def _check_hidden_dtype_device(self, hx: Tuple[Tensor, Tensor], x: Tensor) -> None:
        for k, t in enumerate(hx):
            if t.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                raise RuntimeError(f"Expected hidden[{k}] dtype {x.dtype} (the input's), "
                                   f"got {t.dtype}")
            if t.device != x.device:
                raise RuntimeError(f"Input and hidden tensors are not at the same device, found "
                                   f"input tensor at {x.device} and hidden tensor at {t.device}")
