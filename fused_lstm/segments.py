"""Padded input cut into independent sequences: `lengths=` and `reset=` of FusedLSTM.forward.

A padded batch x: [T, B, I] whose sequence b ends at lengths[b] (0 to T), and whose
state is zeroed before every step t where reset[t, b] is set, is a set of independent
segments: row b from its start (step 0 or a reset) to the next reset or its end. The
layer ops already run such sets as packed batches (columns longest first, fewer as they
end: `batch_sizes`), so the call maps onto them by index maps computed from the lengths
and the resets alone: the data moves once each way and is never sorted.

    x: [T, B, I] padded             --rows-->      packed x: [N, I]      (N = sum of the lengths)
    y: [T, B, C]                    <--sources--   [packed y; a zero row]: [N + 1, C]
    h0: [L*D, B, S]                 --initial-->   [L*D, B', S]          (B' segments; a segment
                                                                          after a reset starts at 0)
    h_n: [L*D, B, S]                <--final--     [packed h_n; h0]      (a row without steps
                                                                          keeps its initial state)

Segments of one row run side by side in the packed batch: each starts from its own state.
With a bidirectional layer each segment is also a sequence of its own for the reverse
direction, which starts at the segment's last step.
"""

import numbers
from typing import List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor


class SegmentLayout(NamedTuple):
    batch_sizes: Tensor  # [T'] int64 on the CPU: packed columns alive at each step
    rows: Tensor         # [N] padded row (t * B + b) behind each packed row
    sources: Tensor      # [T * B] packed row behind each padded row; N (a zero row) for padding
    initial: Tensor      # [B'] caller row whose initial state each segment takes; B: zeros
    final: Tensor        # [B] index into [packed h_n (B' columns); initial states (B)] of h_n[b]

    @property
    def segments(self) -> int:
        """B', the packed batch's columns."""
        return self.initial.numel()


def check_lengths(lengths: Union[Tensor, Sequence[int]], steps: int, batch: int) -> List[int]:
    """The lengths as a list of ints, after the checks (TypeError for a non-integer
    type, ValueError for a wrong count or a value outside [0, steps])."""
    if isinstance(lengths, Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        if lengths.dim() != 1 or lengths.numel() != batch:
            raise ValueError(f"lengths must hold one length per sequence: expected shape "
                             f"({batch},), got {tuple(lengths.shape)}")
        values = [int(v) for v in lengths.tolist()]
    elif isinstance(lengths, (list, tuple)) or type(lengths).__name__ == "ndarray":
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in lengths):
            raise TypeError(f"lengths must be integers, got {lengths!r}")
        if len(lengths) != batch:
            raise ValueError(f"lengths must hold one length per sequence: expected {batch}, "
                             f"got {len(lengths)}")
        values = [int(v) for v in lengths]
    else:
        raise TypeError(f"lengths must be a 1-D integer tensor, a list of ints or a NumPy array, got "
                        f"{type(lengths).__name__}")
    for b, n in enumerate(values):
        if n < 0:
            raise ValueError(f"lengths must be >= 0, got {n} for sequence {b}")
        if n > steps:
            raise ValueError(f"lengths must be at most the input's sequence length {steps}, "
                             f"got {n} for sequence {b}")
    return values


def check_reset(reset, steps: int, batch: int, batch_first: bool) -> Tensor:
    """The reset mask as a bool [steps, batch] tensor on the CPU, after the checks: shape
    [T, B] ([B, T] with batch_first), bool or numbers that are all 0 or 1."""
    if not isinstance(reset, Tensor):
        raise TypeError(f"reset must be a tensor (bool, or numbers 0 and 1), got "
                        f"{type(reset).__name__}")
    want = (batch, steps) if batch_first else (steps, batch)
    if tuple(reset.shape) != want:
        layout = "(B, T) with batch_first" if batch_first else "(T, B)"
        raise ValueError(f"reset must be {layout}: expected shape {want}, got "
                         f"{tuple(reset.shape)}")
    mask = reset.detach().to("cpu")
    if mask.dtype.is_complex:
        raise TypeError(f"reset must be a bool tensor or hold numbers 0 and 1, got dtype "
                        f"{mask.dtype}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("reset must be a bool tensor or hold only 0 and 1, got values "
                             f"{sorted(set(mask[(mask != 0) & (mask != 1)].tolist()))[:4]}")
        mask = mask != 0
    return mask.t() if batch_first else mask


@torch.compiler.disable  # data-dependent sizes: computed eagerly, outside a compiled graph
def layout(steps: int, batch: int, lengths: Optional[List[int]], reset: Optional[Tensor],
           device: torch.device) -> SegmentLayout:
    """The index maps of a padded [steps, batch, ...] batch cut by (checked) lengths and a
    bool reset mask [steps, batch] (either may be None)."""
    ends = torch.tensor(lengths if lengths is not None else [steps] * batch, dtype=torch.int64)
    step_of = torch.arange(steps, dtype=torch.int64).unsqueeze(1)  # [T, 1]
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0] = True
    if reset is not None:
        starts |= reset
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
    if reset is not None:
        first &= ~reset[0, row_of]
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
    sources = torch.full((steps * batch,), rows.numel(), dtype=torch.int64)
    sources[rows] = torch.arange(rows.numel())
    return SegmentLayout(alive.sum(1), rows.to(device), sources.to(device), initial.to(device),
                         final.to(device))


def pack_rows(x: Tensor, lay: SegmentLayout) -> Tensor:
    """x: [T, B, I] -> the packed rows [N, I]."""
    return x.reshape(-1, x.size(-1)).index_select(0, lay.rows)


def pad_rows(y: Tensor, lay: SegmentLayout, steps: int, batch: int) -> Tensor:
    """Packed rows y: [N, C] -> [steps, batch, C], zero past each sequence's end (one
    gather from y and a zero row: cheaper than zeroing the output and scattering into it)."""
    with_zero = torch.cat([y, y.new_zeros(1, y.size(-1))])
    return with_zero.index_select(0, lay.sources).view(steps, batch, y.size(-1))


def initial_states(state0: Tensor, lay: SegmentLayout) -> Tensor:
    """state0: [L*D, B, S], the caller's initial states -> [L*D, B', S], each segment's."""
    zero = state0.new_zeros(state0.size(0), 1, state0.size(2))
    return torch.cat([state0, zero], 1).index_select(1, lay.initial)


def final_states(packed_final: Tensor, state0: Tensor, lay: SegmentLayout) -> Tensor:
    """packed_final: [L*D, B', S] (each segment's last state), state0: [L*D, B, S] ->
    h_n or c_n: [L*D, B, S] in the caller's order."""
    return torch.cat([packed_final, state0.to(packed_final.dtype)], 1).index_select(1, lay.final)
