"""FusedLSTM under torch.onnx.export: each layer as ONNX's standard LSTM operator.

FusedLSTM.forward calls `forward` here instead of its fused ops when `in_onnx_export()` says
an ONNX export is under way. The fused ops are custom ops that no ONNX runtime knows, so the
ONNX form is built from ONNX's own LSTM:

- torch.onnx.export(dynamo=True), the default: each layer becomes one `LSTM` node, emitted with
  torch.onnx.ops.symbolic_multi_out (torch's mechanism for ONNX ops in a traced graph). The
  weights are converted in the graph: gates from torch's order i, f, g, o to ONNX's i, o, f, c,
  W = weight_ih [num_directions, 4H, input], R = weight_hh [num_directions, 4H, H],
  B = [bias_ih; bias_hh] [num_directions, 8H]; layout 0 (time-major) with Transposes for
  batch_first; h0/c0 as initial_h/initial_c and Y_h/Y_c as h_n/c_n; a PackedSequence as
  padded input with sequence_lens, and forward's lengths= as sequence_lens too (the output
  zeroed past each length, a length-0 sequence's h_n/c_n its initial state). Sequence length
  and batch stay dynamic.
- proj_size > 0, which the LSTM op has no attribute for, is decomposed exactly onto it: the
  node carries the unprojected state h~ (h = W_hr h~), with R = W_hh W_hr, and a MatMul by
  W_hr after it. A given h0 (already projected) enters the first step through extra input
  features: the node's input is [x_t, h0 at the step where the direction starts, else 0]
  with W = [W_ih, W_hh], and its initial_h is 0.
- The TorchScript exporter (dynamo=False) traces the equivalent nn.LSTM, sharing the
  parameters, so it exports as nn.LSTM does (aten::lstm, which that exporter maps to LSTM).

What cannot be exported raises OnnxExportError saying why: dropout between layers or weight drop
in training mode, bfloat16 (not a type of ONNX's LSTM before opset 22), autocast (`_refuse`); with
dynamo=True, a PackedSequence made by pack_padded_sequence inside the model (torch.export
cannot trace that op); with dynamo=False, proj_size > 0 (that exporter refuses it) and lengths=;
reset= (no resets in ONNX's LSTM: FusedLSTM.forward raises).
"""

import sys
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import segments, variants


# torch.export (the dynamo exporter) is tracing; torch before 2.5 has is_compiling only.
_is_exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)
# torch.jit tracing (the TorchScript exporter); torch.jit.is_tracing() is this plus a check for
# scripting that costs 0.1 us more per call.
_is_tracing = getattr(torch._C, "_is_tracing", torch.jit.is_tracing)
_is_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", lambda: False)


def in_onnx_export() -> bool:
    """Whether torch.onnx.export is tracing this call. FusedLSTM.forward asks on every call,
    so it costs about 0.15 us when no export is under way: torch.onnx's own test only runs
    under torch.export or torch.jit tracing, which every ONNX export goes through."""
    if _is_exporting():  # torch.export: non-strict (eager) or strict (Dynamo)
        # torch.onnx.is_in_onnx_export() is torch's test, but Dynamo (which torch.onnx.export
        # runs, as torch.export(strict=True), when the non-strict capture fails) takes it as
        # False; so the dynamo exporter's flag is read as well, where this torch has it.
        flags = sys.modules.get("torch.onnx._internal.exporter._flags")
        return bool(getattr(flags, "_is_onnx_exporting", False)) or torch.onnx.is_in_onnx_export()
    if _is_dynamo_compiling():  # torch.compile (Dynamo breaks its graph on _is_tracing)
        return False
    return _is_tracing() and torch.onnx.is_in_onnx_export()  # the TorchScript exporter


class OnnxExportError(RuntimeError):
    """A FusedLSTM configuration or call that cannot be exported to ONNX, and why."""


def forward(module, input, hx: Optional[Tuple[Tensor, Tensor]] = None, lengths=None):
    """FusedLSTM.forward's ONNX form: same arguments (lengths: forward's `lengths=`),
    results and argument checks."""
    _refuse(module, input)
    if _is_dynamo_compiling():
        # torch.onnx.export captures with torch.export(strict=False) first, and falls back to
        # strict=True (Dynamo) only when that fails: its first error is the one to read.
        raise OnnxExportError(
            "FusedLSTM's ONNX form is built in torch.onnx.export's non-strict capture; Dynamo "
            "(torch.export strict=True, its fallback) does not trace torch.onnx.ops. See the "
            "error of the non-strict capture (torch.onnx.export reports it first)")
    if torch.jit.is_tracing():  # the TorchScript exporter (dynamo=False)
        if lengths is not None:
            raise OnnxExportError(
                "FusedLSTM with lengths= cannot be exported by the TorchScript exporter "
                "(torch.onnx.export(..., dynamo=False)), which exports the equivalent nn.LSTM, "
                "and nn.LSTM has no lengths=. Use torch.onnx.export(..., dynamo=True), the "
                "default, which maps lengths= to the LSTM op's sequence_lens")
        return _torchscript_forward(module, input, hx)
    if not hasattr(getattr(torch.onnx, "ops", None), "symbolic_multi_out"):
        raise OnnxExportError(
            f"FusedLSTM needs torch 2.8 or newer (torch.onnx.ops) to export with dynamo=True; "
            f"this is torch {torch.__version__}. Upgrade torch, or export with dynamo=False")
    return _dynamo_forward(module, input, hx, lengths)


def _refuse(module, input) -> None:
    """Raise OnnxExportError for what an ONNX LSTM cannot compute as this module would."""
    what = "FusedLSTM cannot be exported to ONNX"
    if module.training and module.dropout > 0 and module.num_layers > 1:
        raise OnnxExportError(
            f"{what} in training mode with dropout={module.dropout}: ONNX's LSTM has no "
            "dropout between layers, and the exported model would not drop. Export is for "
            "inference: call model.eval() first")
    if module.training and getattr(module, "weight_drop", 0) > 0:
        raise OnnxExportError(
            f"{what} in training mode with weight_drop={module.weight_drop}: ONNX's LSTM has "
            "no weight drop, and the exported model would not drop. Export is for inference, "
            "where weight drop does nothing: call model.eval() first")
    beyond = variants.beyond_nn_lstm(module, inference=not module.training)
    if beyond:
        raise OnnxExportError(
            f"{what} with {', '.join(beyond)}: ONNX's LSTM op has no layer norm, zoneout, "
            "recurrent dropout or per-step cell output, and the exported model would silently "
            "compute something else (recurrent dropout alone exports in eval mode, where it "
            "does nothing)")
    x = input.data if isinstance(input, PackedSequence) else input
    if torch.is_autocast_enabled(x.device.type):
        raise OnnxExportError(
            f"{what} under autocast: ONNX has no autocast. Export outside autocast, with the "
            "model and inputs in the dtype to run in")
    dtypes = {w.dtype for ws in module.all_weights for w in ws}
    if dtypes - {torch.float32, torch.float64, torch.float16}:
        raise OnnxExportError(
            f"{what} with {sorted(map(str, dtypes))} parameters: ONNX's LSTM computes in "
            "float32, float64 or float16 only (bfloat16 from opset 22). Convert the model, "
            "e.g. model.float(), before export")


# ---- TorchScript exporter (dynamo=False) ----

def _torchscript_forward(module, input, hx):
    if module.proj_size > 0:
        raise OnnxExportError(
            "FusedLSTM with proj_size > 0 cannot be exported by the TorchScript exporter "
            "(torch.onnx.export(..., dynamo=False)): it maps nn.LSTM to ONNX's LSTM, which has "
            "no projection, and refuses it. Use torch.onnx.export(..., dynamo=True), the "
            "default, which decomposes the projection")
    # nn.LSTM sharing this module's parameters: the exporter knows its op (aten::lstm),
    # PackedSequence included, and the trace records the parameters themselves.
    # _shared_lstm, not to_lstm: _refuse let only eval mode through with weight_drop > 0.
    return module._shared_lstm()(input, hx)


# ---- torch.export-based exporter (dynamo=True) ----

def _dynamo_forward(module, input, hx, lengths_arg=None):
    packed = isinstance(input, PackedSequence)
    if packed and lengths_arg is not None:
        raise ValueError("lengths= and reset= are for padded input; a PackedSequence holds its "
                         "own lengths")
    hx = _as_pair(hx)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if batch_sizes.dtype != torch.int64:
            # Every real PackedSequence has int64 batch_sizes; torch.export's stand-in for
            # aten._pack_padded_sequence (torch 2.13) gives float ones.
            raise OnnxExportError(
                "FusedLSTM cannot be exported with dynamo=True on a PackedSequence made by "
                "pack_padded_sequence inside the exported model: torch.export cannot trace "
                "aten._pack_padded_sequence (its output size depends on the lengths' values; "
                f"its stand-in kernel gives batch_sizes of {batch_sizes.dtype}) and torch.onnx "
                "has no ONNX translation for it (nn.LSTM fails there too). Export such a model "
                "with torch.onnx.export(..., dynamo=False), where FusedLSTM exports as nn.LSTM "
                "does, packing included; or make the PackedSequence's tensors (data, "
                "batch_sizes, sorted_indices, unsorted_indices) inputs of the exported model")
        module.check_input(data, batch_sizes)
        if hx is not None:
            _check_state_dims(module, hx, data, want_dim=3)
            hx = module.permute_hidden(hx, sorted_indices)
        batch = (hx[0].shape[1] if hx is not None
                 else sorted_indices.shape[0] if sorted_indices is not None else None)
        x, lengths, mask = _unpack(data, batch_sizes, batch)
    else:
        x, lengths = input, None
        if x.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {x.dim()}D instead")
        batched = x.dim() == 3
        if lengths_arg is not None and not batched:
            raise ValueError("lengths= needs batched input (T, B, I), or (B, T, I) with "
                             f"batch_first; got a {x.dim()}-D input")
        if not batched:
            x = x.unsqueeze(0 if module.batch_first else 1)
        module.check_input(x, None)
        if hx is not None:
            _check_state_dims(module, hx, x, want_dim=3 if batched else 2)
            if not batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            module.check_hidden_size(hx[0], module.get_expected_hidden_size(x, None),
                                     "Expected hidden[0] size {}, got {}")
            module.check_hidden_size(hx[1], module.get_expected_cell_size(x, None),
                                     "Expected hidden[1] size {}, got {}")
        if x.size(1 if module.batch_first else 0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if module.batch_first:
            x = x.transpose(0, 1)
        if lengths_arg is not None:
            # The LSTM node's sequence_lens; their values (0 to T) are checked by the runtime
            # (onnxruntime raises for others).
            lengths = segments.lengths_tensor(lengths_arg, x.shape[0], x.shape[1],
                                              x.device).to(x.device, torch.int32)

    y, h_n, c_n = _layers(module, x, lengths, hx, zero_lengths=lengths_arg is not None)
    if lengths_arg is not None:
        # zero past each length, whatever the runtime leaves there
        step = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # [T, 1]
        y = torch.where((step < lengths.unsqueeze(0)).unsqueeze(-1), y, 0)

    if packed:
        y = y.flatten(0, 1)[mask.flatten().nonzero().squeeze(1)]  # back to packed rows
        if unsorted_indices is not None:
            h_n = h_n.index_select(1, unsorted_indices)
            c_n = c_n.index_select(1, unsorted_indices)
        return PackedSequence(y, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
    if module.batch_first:
        y = y.transpose(0, 1)
    if not batched:
        y = y.squeeze(0 if module.batch_first else 1)
        h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return y, (h_n, c_n)


def _as_pair(hx):
    if hx is None:
        return None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        n = len(hx) if isinstance(hx, (tuple, list)) else 1
        raise (IndexError if n < 2 else RuntimeError)(
            f"lstm expects two hidden states (h0, c0) as a tuple, got {n}")
    return hx[0], hx[1]


def _check_state_dims(module, hx, x: Tensor, want_dim: int) -> None:
    """h0, c0's dimensions, sizes (but the batch's, for packed input), dtype and device."""
    if hx[0].dim() != want_dim or hx[1].dim() != want_dim:
        raise RuntimeError(
            f"For {'batched 3-D' if want_dim == 3 else 'unbatched 2-D'} input, hx and cx "
            f"should also be {want_dim}-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
    states = module.num_layers * (2 if module.bidirectional else 1)
    for k, (t, size) in enumerate(zip(hx, (module.proj_size or module.hidden_size,
                                           module.hidden_size))):
        if want_dim == 3 and (t.shape[0] != states or t.shape[2] != size):
            raise RuntimeError(f"Expected hidden[{k}] size ({states}, batch, {size}), "
                               f"got {list(t.shape)}")
        if t.dtype != x.dtype:
            raise RuntimeError(f"Expected hidden[{k}] dtype {x.dtype} (the input's), "
                               f"got {t.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"Input and hidden tensors are not at the same device, found "
                               f"input tensor at {x.device} and hidden tensor at {t.device}")


def _unpack(data: Tensor, batch_sizes: Tensor, batch):
    """Packed rows [N, I] -> padded time-major x [T, B, I], lengths [B] (int32, the rows
    in packed (sorted) order) and the mask [T, B] of real steps. Gathers rather than
    scatters, so no shape here depends on the values (B aside, when only batch_sizes says)."""
    sizes = batch_sizes.to(data.device)
    steps = sizes.shape[0]
    if batch is None:
        batch = sizes[0].item()
    row = torch.arange(batch, device=data.device)
    mask = row.unsqueeze(0) < sizes.unsqueeze(1)  # [T, B]
    start = torch.cumsum(sizes, 0) - sizes  # first packed row of each step
    index = torch.where(mask, start.unsqueeze(1) + row.unsqueeze(0), 0)
    x = data[index.reshape(-1)].reshape(steps, batch, data.shape[-1])
    x = torch.where(mask.unsqueeze(-1), x, 0)
    lengths = mask.sum(0, dtype=torch.int32)
    return x, lengths, mask


def _iofc(w: Tensor, hidden: int) -> Tensor:
    """Rows of the 4 gates from torch's order i, f, g, o to ONNX's i, o, f, c (c is g)."""
    return torch.cat([w[:hidden], w[3 * hidden:], w[hidden:2 * hidden],
                      w[2 * hidden:3 * hidden]])


def _lstm_node(x, W, R, B, lengths, h0, c0, hidden: int, direction: str, layer: int):
    """One ONNX LSTM node. x [T, B, I]; W [D, 4H, I]; R [D, 4H, H]; B [D, 8H] or None;
    h0, c0 [D, B, H] or None. Returns Y [T, D, B, H], Y_h, Y_c [D, B, H]."""
    steps, batch, dirs = x.shape[0], x.shape[1], W.shape[0]
    return torch.onnx.ops.symbolic_multi_out(
        "LSTM", [x, W, R, B, lengths, h0, c0],
        {"hidden_size": hidden, "direction": direction, "layout": 0},
        dtypes=[x.dtype] * 3,
        shapes=[[steps, dirs, batch, hidden], [dirs, batch, hidden], [dirs, batch, hidden]],
        metadata_props={"pkg.fused_lstm.layer": str(layer)})


def _layers(module, x: Tensor, lengths: Optional[Tensor], hx, zero_lengths: bool = False):
    """All layers on time-major x [T, B, I]: y [T, B, D * Hout], h_n, c_n. zero_lengths:
    lengths may hold 0, where the LSTM node gives Y_h = Y_c = 0 (onnxruntime) and
    FusedLSTM the initial state."""
    dirs = 2 if module.bidirectional else 1
    H, P = module.hidden_size, module.proj_size
    weights = module.all_weights  # per layer direction, each as forward would read it now
    h_n: List[Tensor] = []
    c_n: List[Tensor] = []
    for layer in range(module.num_layers):
        ws = [_named(module, w) for w in weights[layer * dirs:(layer + 1) * dirs]]
        h0 = c0 = None
        if hx is not None:
            h0, c0 = hx[0][layer * dirs:(layer + 1) * dirs], hx[1][layer * dirs:(layer + 1) * dirs]
        if P == 0:
            x, h, c = _plain_layer(x, ws, lengths, h0, c0, H, layer)
        else:
            x, h, c = _projected_layer(x, ws, lengths, h0, c0, H, layer)
        if zero_lengths and h0 is not None:
            empty = (lengths == 0).view(1, -1, 1)  # [1, B, 1]
            h, c = torch.where(empty, h0, h), torch.where(empty, c0, c)
        elif zero_lengths:
            empty = (lengths == 0).view(1, -1, 1)
            h, c = torch.where(empty, 0, h), torch.where(empty, 0, c)
        h_n.append(h)
        c_n.append(c)
    return x, torch.cat(h_n), torch.cat(c_n)


def _named(module, ws):
    """(w_ih, w_hh, b_ih or None, b_hh or None, w_hr or None) of one layer direction."""
    b_ih, b_hh = (ws[2], ws[3]) if module.bias else (None, None)
    return ws[0], ws[1], b_ih, b_hh, ws[-1] if module.proj_size > 0 else None


def _bias(ws, hidden: int) -> Optional[Tensor]:
    _, _, b_ih, b_hh, _ = ws
    return None if b_ih is None else torch.cat([_iofc(b_ih, hidden), _iofc(b_hh, hidden)])


def _plain_layer(x, ws, lengths, h0, c0, hidden: int, layer: int):
    """A layer without projection: one LSTM node, both directions."""
    W = torch.stack([_iofc(w[0], hidden) for w in ws])
    R = torch.stack([_iofc(w[1], hidden) for w in ws])
    B = torch.stack([_bias(w, hidden) for w in ws]) if ws[0][2] is not None else None
    Y, h, c = _lstm_node(x, W, R, B, lengths, h0, c0, hidden,
                         "bidirectional" if len(ws) == 2 else "forward", layer)
    return Y.transpose(1, 2).flatten(2), h, c  # [T, D, B, H] -> [T, B, D * H]


def _projected_layer(x, ws, lengths, h0, c0, hidden: int, layer: int):
    """A layer with projection h = W_hr h~. The node runs on h~ (size H) with R = W_hh W_hr;
    y and h_n are h~ times W_hr^T. Without h0 one node does both directions (h~0 = 0). With
    h0, one node per direction whose input is [x_t, e_t], e_t = h0 at the direction's first
    step and 0 elsewhere, and W = [W_ih, W_hh]: the first step's gates get W_hh h0 exactly."""
    groups = [list(range(len(ws)))] if h0 is None else [[d] for d in range(len(ws))]
    ys, hs, cs = [], [], []
    for dirs in groups:
        xin, W = x, [_iofc(ws[d][0], hidden) for d in dirs]
        if h0 is not None:
            (d,) = dirs
            xin = torch.cat([x, _first_step_state(x, h0[d], lengths, reverse=d == 1)], -1)
            W = [torch.cat([W[0], _iofc(ws[d][1], hidden)], 1)]
        R = torch.stack([_iofc(ws[d][1] @ ws[d][4], hidden) for d in dirs])
        B = torch.stack([_bias(ws[d], hidden) for d in dirs]) if ws[0][2] is not None else None
        direction = ("bidirectional" if len(dirs) == 2 else
                     "reverse" if dirs == [1] else "forward")
        Y, h, c = _lstm_node(xin, torch.stack(W), R, B, lengths, None,
                             None if c0 is None else c0[dirs[0]:dirs[-1] + 1],
                             hidden, direction, layer)
        for k, d in enumerate(dirs):
            w_hr = ws[d][4]
            ys.append(Y[:, k] @ w_hr.t())
            hs.append(h[k] @ w_hr.t())
            cs.append(c[k])
    return torch.cat(ys, -1), torch.stack(hs), torch.stack(cs)


def _first_step_state(x: Tensor, h0: Tensor, lengths: Optional[Tensor], reverse: bool):
    """[T, B, P]: h0 [B, P] at each row's first step in this direction, 0 at the others."""
    step = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # [T, 1]
    if not reverse:
        first = step == 0
    elif lengths is None:
        first = step == x.shape[0] - 1
    else:
        first = step == (lengths.to(step.dtype) - 1).unsqueeze(0)  # [T, B]
    return torch.where(first.unsqueeze(-1), h0.unsqueeze(0), 0)
