"""Padded input cut into independent sequences: `lengths=` and `reset=` of FusedLSTM.forward.

A padded batch x: [T, B, I] whose sequence b ends at lengths[b] (0 to T), and whose
state is zeroed before every step t where reset[t, b] is set, is a set of independent
segments: row b from its start (step 0 or a reset) to the next reset or its end. The
layer ops already run such sets as packed batches (columns longest first, fewer as they
end: `batch_sizes`), so the call maps onto them by index maps computed from the lengths
and the resets alone: the data moves once each way and is never sorted.

    x: [T, B, I] padded             --rows-->      packed x: [N, I]      (N = sum of the lengths)
    y: [T, B, C], zeros             <--rows--      packed y: [N, C]
    h0: [L*D, B, S]                 --initial-->   [L*D, B', S]          (B' segments; a segment
                                                                          after a reset starts at 0)
    h_n: [L*D, B, S]                <--final--     [packed h_n; h0]      (a row without steps
                                                                          keeps its initial state)

Segments of one row run side by side in the packed batch: each starts from its own state.
With a bidirectional layer each segment is also a sequence of its own for the reverse
direction, which starts at the segment's last step.
"""

import numbers
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _extension


class SegmentLayout(NamedTuple):
    batch_sizes: Tensor  # [T'] int64 on the CPU: packed columns alive at each step
    rows: Tensor         # [N] padded row (t * B + b) behind each packed row
    initial: Tensor      # [B'] caller row whose initial state each segment takes; B: zeros
    final: Tensor        # [B] index into [packed h_n (B' columns); initial states (B)] of h_n[b]

    @property
    def segments(self) -> int:
        """B', the packed batch's columns."""
        return self.initial.numel()


def _check_device(name: str, t: Tensor, device: torch.device) -> None:
    """A lengths or reset tensor lives on the CPU or on the input's device (its values are
    read on the host either way)."""
    if t.device.type != "cpu" and t.device != device:
        raise ValueError(f"{name} must be on the CPU or on the input's device ({device}), got "
                         f"{name} on {t.device}")


def lengths_tensor(lengths: Union[Tensor, Sequence[int]], steps: int, batch: int,
                   device: torch.device) -> Tensor:
    """The lengths as a 1-D int64 tensor, after the checks that need no look at the values
    (TypeError for a non-integer type, ValueError for a wrong count or device). The values
    are checked by the layout op, where they are read: a compiled graph holds no host read
    of them."""
    if isinstance(lengths, Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        if lengths.dim() != 1 or lengths.size(0) != batch:
            raise ValueError(f"lengths must hold one length per sequence: expected shape "
                             f"({batch},), got {tuple(lengths.shape)}")
        _check_device("lengths", lengths, device)
        return lengths.to(torch.int64)
    if isinstance(lengths, (list, tuple)) or type(lengths).__name__ == "ndarray":
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in lengths):
            raise TypeError(f"lengths must be integers, got {lengths!r}")
        if len(lengths) != batch:
            raise ValueError(f"lengths must hold one length per sequence: expected {batch}, "
                             f"got {len(lengths)}")
        return torch.tensor([int(v) for v in lengths], dtype=torch.int64)
    raise TypeError(f"lengths must be a 1-D integer tensor, a list of ints or a NumPy array, got "
                    f"{type(lengths).__name__}")


def _check_length_values(values: List[int], steps: int) -> None:
    for b, n in enumerate(values):
        if n < 0:
            raise ValueError(f"lengths must be >= 0, got {n} for sequence {b}")
        if n > steps:
            raise ValueError(f"lengths must be at most the input's sequence length {steps}, "
                             f"got {n} for sequence {b}")


def reset_tensor(reset, steps: int, batch: int, batch_first: bool, device: torch.device) -> Tensor:
    """The reset mask as [steps, batch] (transposed from [batch, steps] with batch_first),
    after the checks of its type and shape; its values (bool, or numbers all 0 or 1) are
    checked by the layout op."""
    if not isinstance(reset, Tensor):
        raise TypeError(f"reset must be a tensor (bool, or numbers 0 and 1), got "
                        f"{type(reset).__name__}")
    want = (batch, steps) if batch_first else (steps, batch)
    if tuple(reset.shape) != want:
        layout = "(B, T) with batch_first" if batch_first else "(T, B)"
        raise ValueError(f"reset must be {layout}: expected shape {want}, got "
                         f"{tuple(reset.shape)}")
    if reset.dtype.is_complex:
        raise TypeError(f"reset must be a bool tensor or hold numbers 0 and 1, got dtype "
                        f"{reset.dtype}")
    _check_device("reset", reset, device)
    return reset.t() if batch_first else reset


def _reset_values(reset: Tensor) -> Tensor:
    """A checked reset mask [T, B] as bool on the CPU (ValueError for numbers not 0 or 1)."""
    mask = reset.detach().to("cpu")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("reset must be a bool tensor or hold only 0 and 1, got values "
                             f"{sorted(set(mask[(mask != 0) & (mask != 1)].tolist()))[:4]}")
        mask = mask != 0
    return mask


def layout(steps: int, batch: int, lengths: Optional[Tensor], reset: Optional[Tensor],
           device: torch.device) -> SegmentLayout:
    """The index maps of a padded [steps, batch, ...] batch cut by lengths [batch] and a
    reset mask [steps, batch] (either may be None; from lengths_tensor and reset_tensor)."""
    return SegmentLayout(*segment_layout(lengths, reset, steps, batch, device))


def segment_layout_reference(lengths: Optional[Tensor], reset: Optional[Tensor], steps: int,
                             batch: int, device: torch.device
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """SegmentLayout's four tensors (batch_sizes on the CPU, the rest on device), in
    PyTorch: the fused_lstm::segment_layout op where the compiled extension is missing, and
    what tests hold its C++ kernel (csrc/segment_maps.cpp) to."""
    if lengths is not None:
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        ends_list = [int(v) for v in lengths.tolist()]
        _check_length_values(ends_list, steps)
    else:
        ends_list = [steps] * batch
    mask = None if reset is None else _reset_values(reset)
    ends = torch.tensor(ends_list, dtype=torch.int64).reshape(batch)
    step_of = torch.arange(steps, dtype=torch.int64).unsqueeze(1)  # [T, 1]
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0] = True
    if mask is not None:
        starts |= mask
    starts &= step_of < ends.unsqueeze(0)  # no segment starts past a row's end
    row_of, start_of = starts.t().nonzero(as_tuple=True)  # by row, then by step
    count = row_of.numel()
    # a segment ends where the next one of its row starts, or at the row's end
    next_same_row = torch.zeros(count, dtype=torch.bool)
    if count > 1:
        next_same_row[:-1] = row_of[1:] == row_of[:-1]
    end_of = ends[row_of].clone()
    end_of[:-1] = torch.where(next_same_row[:-1], start_of[1:], end_of[:-1])
    length_of = end_of - start_of
    # the initial state: the caller's for a row's first segment unless reset at step 0
    first = start_of == 0
    if mask is not None:
        first &= ~mask[0, row_of]
    initial = torch.where(first, row_of, torch.full_like(row_of, batch))
    # packed columns longest first (a stable sort keeps row, then step order for ties)
    order = torch.sort(length_of, descending=True, stable=True).indices
    row_of, start_of, length_of, initial = (row_of[order], start_of[order], length_of[order],
                                            initial[order])
    # h_n of row b: its last segment (the latest start), else its own initial state
    final = torch.arange(count, count + batch, dtype=torch.int64)
    if count:
        last = torch.full((batch,), -1, dtype=torch.int64)
        last.scatter_reduce_(0, row_of, start_of, reduce="amax")
        is_last = start_of == last[row_of]
        final[row_of[is_last]] = torch.nonzero(is_last).squeeze(1)
    longest = int(length_of[0]) if count else 0
    step_index = torch.arange(longest, dtype=torch.int64).unsqueeze(1)  # [T', 1]
    alive = length_of.unsqueeze(0) > step_index  # [T', B']: a prefix of each row
    rows = ((start_of.unsqueeze(0) + step_index) * batch + row_of.unsqueeze(0))[alive]
    return alive.sum(1), rows.to(device), initial.to(device), final.to(device)


def _op(name: str, reference):
    """torch.ops.fused_lstm.<name> from the compiled extension, or, where it is missing,
    the same op defined from its PyTorch reference."""
    if _extension.extension_loaded():
        return getattr(torch.ops.fused_lstm, name)
    return torch.library.custom_op(f"fused_lstm::{name}", mutates_args=())(reference)


# An op, so that a compiled graph or an exported program holds the call: the maps' sizes
# (packed rows N, segments B', longest segment T') depend on the values of lengths and reset.
segment_layout = _op("segment_layout", segment_layout_reference)


@torch.library.register_fake("fused_lstm::segment_layout")
def _segment_layout_fake(lengths, reset, steps, batch, device):
    ctx = torch.library.get_ctx()
    longest, rows, count = (ctx.new_dynamic_size() for _ in range(3))
    index = dict(dtype=torch.int64, device=device)
    return (torch.empty(longest, dtype=torch.int64), torch.empty(rows, **index),
            torch.empty(count, **index), torch.empty(batch, **index))


def pack_rows(x: Tensor, lay: SegmentLayout) -> Tensor:
    """x: [T, B, I] -> the packed rows [N, I]."""
    return x.reshape(-1, x.size(-1)).index_select(0, lay.rows)


def pad_rows(y: Tensor, lay: SegmentLayout, steps: int, batch: int) -> Tensor:
    """Packed rows y: [N, C] -> [steps, batch, C], zero past each sequence's end."""
    return segment_pad(y, lay.rows, steps, batch)


def segment_pad_reference(packed: Tensor, rows: Tensor, steps: int, batch: int) -> Tensor:
    """packed: [N, C], rows: [N] (distinct padded rows t * batch + b) -> [steps, batch, C]:
    zeros, and packed row k copied to padded row rows[k]. The fused_lstm::segment_pad op
    where the compiled extension is missing (its CPU kernel writes each row once, a copy or
    zeros: csrc/segment_pad_op.cpp)."""
    out = packed.new_zeros(steps * batch, packed.size(-1))
    return out.index_copy_(0, rows, packed).view(steps, batch, packed.size(-1))


segment_pad = _op("segment_pad", segment_pad_reference)


@torch.library.register_fake("fused_lstm::segment_pad")
def _segment_pad_fake(packed, rows, steps, batch):
    return packed.new_empty(steps, batch, packed.size(-1))


def _segment_pad_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _segment_pad_backward(ctx, grad):
    """The packed rows' gradient: the padded gradient's rows they were copied to."""
    (rows,) = ctx.saved_tensors
    return grad.reshape(-1, grad.size(-1)).index_select(0, rows), None, None, None


torch.library.register_autograd("fused_lstm::segment_pad", _segment_pad_backward,
                                setup_context=_segment_pad_setup_context)


def initial_states(state0: Tensor, lay: SegmentLayout) -> Tensor:
    """state0: [L*D, B, S], the caller's initial states -> [L*D, B', S], each segment's."""
    zero = state0.new_zeros(state0.size(0), 1, state0.size(2))
    return torch.cat([state0, zero], 1).index_select(1, lay.initial)


def final_states(packed_final: Tensor, state0: Tensor, lay: SegmentLayout) -> Tensor:
    """packed_final: [L*D, B', S] (each segment's last state), state0: [L*D, B, S] ->
    h_n or c_n: [L*D, B, S] in the caller's order."""
    return torch.cat([packed_final, state0.to(packed_final.dtype)], 1).index_select(1, lay.final)
