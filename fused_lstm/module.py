"""FusedLSTM: nn.LSTM's interface, parameters and numbers, on the fused op."""

import math
import numbers
import warnings
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import onnx_export, options, segments, variants
from .lstm_checks import NNLSTMChecks
from .ops import lstm_layer


class FusedLSTM(NNLSTMChecks, nn.Module):
    """Drop-in replacement for :class:`torch.nn.LSTM`.

    Same constructor, parameter names, shapes, order and initialisation, so a
    ``state_dict`` moves between the two with ``strict=True``. Each layer
    direction runs as one fused op over the whole sequence. Unlike nn.LSTM it is
    an ordinary module to ``torch.compile(fullgraph=True)`` and ``torch.export``,
    and it supports double backward and backward in eval mode on every device.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        forget_bias: float = 0.0,
        chrono_init: Optional[float] = None,
        weight_drop: float = 0.0,
        layer_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        layer_norm_cell: str = "hidden",
        zoneout=0.0,
        recurrent_dropout: float = 0.0,
        return_cell_sequence: bool = False,
    ) -> None:
        """nn.LSTM's arguments, then two keyword-only initialisation options, both off by
        default (with them off, the same draws and values as nn.LSTM's initialisation):

        forget_bias: b, added to every layer direction's bias_ih forget slice [H:2H] after
            the default initialisation (b = 1 is Keras's unit_forget_bias, Jozefowicz et
            al. 2015). Needs bias=True.
        chrono_init: T_max > 2, chrono initialisation (Tallec & Ollivier 2018): per layer
            direction, u ~ Uniform(1, T_max - 1) for each hidden unit, bias_ih forget slice
            = log(u), input slice [0:H] = -log(u), bias_hh[0:2H] = 0. Needs bias=True; not
            with forget_bias, as it sets the forget bias itself.

        and one keyword-only regularisation option, off by default:

        weight_drop: p in [0, 1), DropConnect on the recurrent weights as in AWD-LSTM
            (Merity et al. 2017): in training mode every forward call runs each layer
            direction with F.dropout(weight_hh, p, training=True) in place of weight_hh
            (zeroed with probability p, the rest scaled by 1 / (1 - p)); the parameters
            stay as they are, and get their gradients through the mask. Eval mode, and
            p = 0, use the weights as they are (p = 0 draws nothing).

        and the variants that change the recurrence, all off by default (README, "Variants",
        for the exact formulas; fused_lstm/reference.py, lstm_variant_reference):

        layer_norm: LayerNorm-LSTM: the input and recurrent parts of the gate
            pre-activations each normalised over their 4H values (parameters
            layer_norm_ih_l{k}, layer_norm_hh_l{k}), and c normalised (layer_norm_c_l{k})
            before the tanh that makes h. layer_norm_eps: their eps. layer_norm_cell:
            "hidden" keeps c un-normalised as the state; "state" carries the normalised c.
        zoneout: p, or (p_h, p_c): in training mode each unit keeps its previous h (c) with
            probability p_h (p_c) at every step; in eval mode h = p_h h_prev + (1 - p_h) h_new
            (and c alike).
        recurrent_dropout: p: in training mode h is multiplied by a mask, one per sequence
            and layer direction (0 with probability p, else 1 / (1 - p)), before the
            recurrent product; none in eval mode.
        return_cell_sequence: forward also returns c of every step of the last layer
            (output's layout, H per direction), as a third value (also a forward keyword).
        """
        super().__init__()
        if (not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1
                or isinstance(dropout, bool)):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                "dropout expects num_layers greater than 1, but got "
                f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        for name, value, kind in (("bias", bias, bool), ("batch_first", batch_first, bool),
                                  ("input_size", input_size, int),
                                  ("hidden_size", hidden_size, int)):
            if not isinstance(value, kind):
                raise TypeError(f"{name} should be of type {kind.__name__}, "
                                f"got: {type(value).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             "projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        forget_bias, chrono_init, weight_drop = options.checked(forget_bias, chrono_init,
                                                                weight_drop, bias)
        (layer_norm, layer_norm_eps, layer_norm_cell, zoneout, recurrent_dropout,
         return_cell_sequence) = variants.checked(layer_norm, layer_norm_eps, layer_norm_cell,
                                                  zoneout, recurrent_dropout,
                                                  return_cell_sequence)

        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.forget_bias = forget_bias
        self.chrono_init = chrono_init
        self.weight_drop = weight_drop
        self.layer_norm = layer_norm
        self.layer_norm_eps = layer_norm_eps
        self.layer_norm_cell = layer_norm_cell
        self.zoneout = zoneout
        self.recurrent_dropout = recurrent_dropout
        self.return_cell_sequence = return_cell_sequence
        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        real_hidden = proj_size if proj_size > 0 else hidden_size
        # Parameter names in nn.LSTM's registration order, per layer and direction.
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                sfx = f"_l{layer}{'_reverse' if direction == 1 else ''}"
                shapes = [("weight_ih" + sfx, (4 * hidden_size, layer_input)),
                          ("weight_hh" + sfx, (4 * hidden_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih" + sfx, (4 * hidden_size,)),
                               ("bias_hh" + sfx, (4 * hidden_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr" + sfx, (proj_size, hidden_size))]
                for name, shape in shapes:
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                self._all_weights.append([name for name, _ in shapes])
        # layer_norm: LayerNorms named after the layer direction, beside nn.LSTM's weights
        # (so an nn.LSTM checkpoint loads with strict=False, missing exactly these).
        self._norm_modules: List[List[str]] = []
        if layer_norm:
            for names in self._all_weights:
                sfx = names[0][len("weight_ih"):]
                norms = [(f"layer_norm_ih{sfx}", 4 * hidden_size),
                         (f"layer_norm_hh{sfx}", 4 * hidden_size),
                         (f"layer_norm_c{sfx}", hidden_size)]
                for name, size in norms:
                    setattr(self, name, nn.LayerNorm(size, eps=layer_norm_eps, **factory))
                self._norm_modules.append([name for name, _ in norms])
        # nn.LSTM's attributes that code written for it reads.
        self.mode = "LSTM"
        self._flat_weights_names: List[str] = [n for names in self._all_weights for n in names]
        self.reset_parameters()

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        if "_flat_weights_names" not in self.__dict__:  # pickled by an older fused_lstm
            self.mode = "LSTM"
            self._flat_weights_names = [n for names in self._all_weights for n in names]
        # pickled before the initialisation options: they were off
        self.__dict__.setdefault("forget_bias", 0.0)
        self.__dict__.setdefault("chrono_init", None)
        self.__dict__.setdefault("weight_drop", 0.0)  # pickled before weight_drop: off
        for name, off in (("layer_norm", False), ("layer_norm_eps", 1e-5),
                          ("layer_norm_cell", "hidden"), ("zoneout", (0.0, 0.0)),
                          ("recurrent_dropout", 0.0), ("return_cell_sequence", False),
                          ("_norm_modules", [])):
            self.__dict__.setdefault(name, off)  # pickled before the variants: off

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        norms = [getattr(self, name) for names in self._norm_modules for name in names]
        in_norms = {id(p) for norm in norms for p in norm.parameters()}
        for weight in self.parameters():
            if id(weight) not in in_norms:
                nn.init.uniform_(weight, -stdv, stdv)
        for norm in norms:  # gain 1, bias 0
            norm.reset_parameters()
        options.initialise_biases(self)  # the initialisation options, if any

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> List[Optional[Tensor]]:
        """nn.LSTM's flat weight list, in `_flat_weights_names` order: each weight as forward
        reads it now (after reassignment, under a parametrization, pruned...)."""
        return [getattr(self, n) if hasattr(self, n) else None for n in self._flat_weights_names]

    @_flat_weights.setter
    def _flat_weights(self, value) -> None:
        raise AttributeError(
            "FusedLSTM reads its weights by name (weight_ih_l0, weight_hh_l0, ...) on every "
            "call, so _flat_weights cannot be assigned: assign the weights themselves")

    def _current_weights(self) -> List[List[Tensor]]:
        """Each layer direction's weights, as the module holds them right now."""
        params = self._parameters  # direct lookups: nn.Module's __getattr__ costs us per call
        try:
            return [[params[name] for name in names] for names in self._all_weights]
        except KeyError:
            # A weight reparametrized (torch.nn.utils.parametrize, weight_norm, prune) or
            # replaced by a plain tensor is no longer a parameter of its own; the attribute
            # gives its current value, computed from what the parametrization holds.
            return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op, kept so code written for nn.LSTM runs unchanged."""

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        if self.forget_bias != 0:
            s += ", forget_bias={forget_bias}"
        if self.chrono_init is not None:
            s += ", chrono_init={chrono_init}"
        if self.weight_drop != 0:
            s += ", weight_drop={weight_drop}"
        if self.layer_norm:
            s += ", layer_norm=True"
            if self.layer_norm_eps != 1e-5:
                s += ", layer_norm_eps={layer_norm_eps}"
            if self.layer_norm_cell != "hidden":
                s += ", layer_norm_cell={layer_norm_cell!r}"
        if self.zoneout != (0.0, 0.0):
            s += ", zoneout={zoneout}"
        if self.recurrent_dropout != 0:
            s += ", recurrent_dropout={recurrent_dropout}"
        if self.return_cell_sequence:
            s += ", return_cell_sequence=True"
        return s.format(**self.__dict__)

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM) -> "FusedLSTM":
        """A FusedLSTM with `lstm`'s configuration, and its parameters copied."""
        first = next(lstm.parameters())
        fused = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias,
                    lstm.batch_first, lstm.dropout, lstm.bidirectional, lstm.proj_size,
                    device=first.device, dtype=first.dtype)
        fused.load_state_dict(lstm.state_dict(), strict=True)
        fused.train(lstm.training)
        return fused

    def to_lstm(self) -> nn.LSTM:
        """An nn.LSTM with this configuration that shares this module's parameters (the same
        Parameter objects: training either trains both)."""
        if self.weight_drop > 0:
            raise RuntimeError(
                f"FusedLSTM.to_lstm: this module has weight_drop={self.weight_drop} (DropConnect "
                "on weight_hh in training mode), and nn.LSTM has no weight drop. This raises "
                "rather than warns because the nn.LSTM shares these parameters to be trained "
                "or deployed in their place: trained, it would silently train without the "
                "regularisation. For inference, where weight drop changes nothing, set "
                "weight_drop = 0.0 on the module (or on a copy of it) first")
        beyond = variants.beyond_nn_lstm(self, inference=False)
        if beyond:
            raise RuntimeError(
                f"FusedLSTM.to_lstm: this module has {', '.join(beyond)}, which nn.LSTM cannot "
                "compute; an nn.LSTM in its place would silently give other results (or, for "
                "a training-mode regulariser, train without it)")
        return self._shared_lstm()

    def _shared_lstm(self) -> nn.LSTM:
        """to_lstm's nn.LSTM, without the weight_drop check: for inference-only uses
        (ONNX export in eval mode, dynamic quantization), where weight drop does nothing.
        Refuses the variants that change eval-mode results (recurrent dropout does not)."""
        beyond = variants.beyond_nn_lstm(self, inference=True)
        if beyond:
            raise RuntimeError(
                f"FusedLSTM with {', '.join(beyond)} has no nn.LSTM equivalent, so it cannot "
                "become one (ONNX's LSTM op, torch.jit.script and dynamic quantization all "
                "go through nn.LSTM's form): the result would silently differ")
        weights = self._current_weights()
        names = [n for ns in self._all_weights for n in ns]
        if any(not isinstance(w, nn.Parameter) or self._parameters.get(n) is not w
               for n, w in zip(names, (w for ws in weights for w in ws))):
            raise RuntimeError(
                "FusedLSTM.to_lstm needs every weight to be a parameter of its own; this "
                "module's weights are reparametrized or replaced (parametrize, weight_norm, "
                "prune...). Remove the reparametrization first, or copy the weights into an "
                "nn.LSTM yourself")
        first = weights[0][0]
        lstm = nn.LSTM(self.input_size, self.hidden_size, self.num_layers, self.bias,
                       self.batch_first, self.dropout, self.bidirectional, self.proj_size,
                       device="meta", dtype=first.dtype)
        for name in names:
            setattr(lstm, name, self._parameters[name])
        lstm._init_flat_weights()
        lstm.train(self.training)
        return lstm

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script cannot compile this module's Python (its ops' wrappers, the
        # autograd and fallback logic), so it compiles the nn.LSTM FusedLSTM is equivalent
        # to, sharing the parameters: same numbers, and a scripted model that needs no
        # fused_lstm to run, but nn.LSTM's kernels.
        if self.weight_drop > 0:
            raise RuntimeError(
                f"torch.jit.script: FusedLSTM with weight_drop={self.weight_drop} cannot be "
                "scripted: script compiles the equivalent nn.LSTM, which has no weight drop, "
                "so the scripted model would silently lose it in training mode. Use "
                "torch.compile or torch.export; or, for an inference-only model, set "
                "weight_drop = 0.0 (it does nothing in eval mode) before scripting")
        beyond = variants.beyond_nn_lstm(self, inference=False)
        if beyond:
            raise RuntimeError(
                f"torch.jit.script: FusedLSTM with {', '.join(beyond)} cannot be scripted: "
                "script compiles the equivalent nn.LSTM, which has none of these. Use "
                "torch.compile or torch.export")
        warnings.warn(
            "torch.jit.script: FusedLSTM is scripted as the equivalent nn.LSTM (same "
            "parameters and results, nn.LSTM's kernels). To keep FusedLSTM's kernels in a "
            "deployed model, use torch.jit.trace, torch.export or torch.compile.",
            stacklevel=2)
        return self.to_lstm()

    # ---- forward ----

    def forward(self, input, hx: Optional[Tuple[Tensor, Tensor]] = None, **options):
        """nn.LSTM's forward, and two keyword-only options for padded input (README, API):

        lengths: one per sequence, 0 to T (a 1-D integer tensor or a list of ints): outputs
            past a sequence's length are zero, h_n/c_n are its state after its last step
            (its initial state for length 0), the reverse direction starts at its last step.
        reset: a mask [T, B] ([B, T] with batch_first; [T] for unbatched input), bool or
            0/1: (h, c) of every layer are zeroed before each step where it is set.
        return_cell_sequence: bool, overriding the constructor's: also return c of every
            step of the last layer, (output, (h_n, c_n), cells), cells in output's layout
            with H per direction (a PackedSequence for packed input).

        (They arrive through **options rather than as named keyword-only parameters:
        torch.onnx's TorchScript exporter passes every defaulted parameter of forward
        positionally.)
        """
        if isinstance(input, torch.fx.Proxy):
            return self._fx_leaf_call(input, hx, options)
        lengths = options.pop("lengths", None)
        reset = options.pop("reset", None)
        return_cells = options.pop("return_cell_sequence", self.return_cell_sequence)
        if not isinstance(return_cells, bool):
            raise TypeError(f"return_cell_sequence should be a bool, got {return_cells!r} of "
                            f"type {type(return_cells).__name__}")
        if options:
            raise TypeError(f"FusedLSTM.forward() got an unexpected keyword argument "
                            f"'{next(iter(options))}'")
        if onnx_export.in_onnx_export():  # ONNX's LSTM op instead of the fused ops
            if return_cells:
                raise NotImplementedError(
                    "FusedLSTM: ONNX export of a call with return_cell_sequence=True is not "
                    "supported (ONNX's LSTM op gives no per-step cell states)")
            if reset is not None:
                raise NotImplementedError(
                    "FusedLSTM: ONNX export of a call with reset= is not supported: ONNX's "
                    "LSTM op has no state resets inside a sequence")
            return onnx_export.forward(self, input, hx, lengths)
        packed = isinstance(input, PackedSequence)
        if packed and (lengths is not None or reset is not None):
            raise ValueError("lengths= and reset= are for padded input; a PackedSequence "
                             "holds its own lengths")
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = input
            batch = int(batch_sizes[0]) if batch_sizes.numel() else 0
            is_batched = True
        else:
            x, batch_sizes, sorted_indices, unsorted_indices = input, None, None, None
            if x.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {x.dim()}D instead")
            is_batched = x.dim() == 3
            if lengths is not None and not is_batched:
                raise ValueError("lengths= needs batched input (T, B, I), or (B, T, I) with "
                                 f"batch_first; got a {x.dim()}-D input")
            if not is_batched:
                x = x.unsqueeze(0 if self.batch_first else 1)
                if reset is not None and isinstance(reset, Tensor) and reset.dim() == 1:
                    reset = reset.unsqueeze(0 if self.batch_first else 1)
            batch = x.size(0) if self.batch_first else x.size(1)
        weights = self._current_weights()
        self._check_input(x, batch_sizes, weights[0][0])
        if hx is not None:
            # nn.LSTM indexes hx[0], hx[1] without checking hx's type: a stacked Tensor
            # passes its shape checks and then fails with TypeError.
            stacked = isinstance(hx, Tensor) and hx.dim() > 0 and hx.size(0) >= 2
            if stacked:
                hx = (hx[0], hx[1])
            elif not isinstance(hx, (tuple, list)) or len(hx) != 2:
                n = len(hx) if isinstance(hx, (tuple, list)) else 1
                # nn.LSTM fails with IndexError on fewer than two, RuntimeError on more.
                raise (IndexError if n < 2 else RuntimeError)(
                    f"lstm expects two hidden states (h0, c0), got {n}")
            if not packed:
                want = 3 if is_batched else 2
                if hx[0].dim() != want or hx[1].dim() != want:
                    raise RuntimeError(
                        f"For {'batched 3-D' if is_batched else 'unbatched 2-D'} input, hx and cx "
                        f"should also be {want}-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) "
                        "tensors")
                if not is_batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            self._check_state_sizes(x, hx, batch_sizes)
            self._check_hidden_dtype_device(hx, x)
            if stacked:
                raise TypeError("lstm expects hx as a tuple (h0, c0) of tensors, got a Tensor")
            hx = self.permute_hidden(hx, sorted_indices)
        if not packed:
            if x.size(1 if self.batch_first else 0) == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            if self.batch_first:
                x = x.transpose(0, 1)

        if lengths is not None or reset is not None:
            steps = x.size(0)
            y, h_n, c_n, cells = self._run_segments(
                x,
                None if lengths is None else segments.lengths_tensor(lengths, steps, batch,
                                                                     x.device),
                None if reset is None else segments.reset_tensor(reset, steps, batch,
                                                                 self.batch_first, x.device),
                hx, weights, return_cells)
        else:
            y, h_n, c_n, cells = self._run_layers(x, batch_sizes, hx, batch, weights,
                                                  return_cells)

        if packed:
            out = PackedSequence(y, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
                c_n = c_n.index_select(1, unsorted_indices)
            if return_cells:
                return out, (h_n, c_n), PackedSequence(cells, batch_sizes, sorted_indices,
                                                       unsorted_indices)
            return out, (h_n, c_n)
        if self.batch_first:
            y = y.transpose(0, 1)
            cells = None if cells is None else cells.transpose(0, 1)
        if not is_batched:
            y = y.squeeze(0 if self.batch_first else 1)
            cells = None if cells is None else cells.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        if return_cells:
            return y, (h_n, c_n), cells
        return y, (h_n, c_n)

    def step(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None):
        """One time step, for streaming: input [B, I] (or [I] unbatched) and the state
        (h, c) carried from the previous step (None: zeros) -> (output [B, D * Hout]
        (or [D * Hout]), (h_n, c_n)). The same as forward on a sequence of length 1,
        whatever batch_first says; on the CPU such calls skip the weights' blocked copy.
        No cell sequence, whatever return_cell_sequence says: the step's c is c_n."""
        if not isinstance(input, Tensor) or input.dim() not in (1, 2):
            raise ValueError("FusedLSTM.step: expected one step, input of shape (B, I) or (I,), "
                             f"got {tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__}")
        batched = input.dim() == 2
        time_dim = 1 if (batched and self.batch_first) else 0
        output, state = self(input.unsqueeze(time_dim), hx, return_cell_sequence=False)
        return output.squeeze(time_dim), state

    def _fx_leaf_call(self, input: "torch.fx.Proxy", hx, options):
        """Under torch.fx.symbolic_trace: one call_module node for this module, as the
        tracer makes for nn.LSTM (a leaf there, being in torch.nn), instead of tracing
        into forward, whose checks branch on the input's shape."""
        tracer = input.tracer
        try:
            path = tracer.path_of_module(self)
        except NameError:
            path = None
        if not path:
            raise torch.fx.proxy.TraceError(
                "torch.fx.symbolic_trace traces a model holding FusedLSTM, where FusedLSTM "
                "becomes one call_module node as nn.LSTM does; FusedLSTM itself cannot be "
                "the traced root (nor can nn.LSTM). Wrap it in a module, or use torch.export "
                "or torch.compile")
        args = (input,) if hx is None else (input, hx)
        kwargs = dict(options) if isinstance(options, dict) else {}
        return tracer.create_proxy("call_module", path, args, kwargs)

    def _autocast_dtypes(self, x: Tensor, batch_sizes: Optional[Tensor]):
        """Under autocast: (dtype to run in, dtype of output and h_n, dtype of c_n), else None.

        These are the dtypes nn.LSTM gives. On CUDA (cuDNN) float32 input runs in
        float16 under either autocast dtype. On the CPU, with float32 input, its
        oneDNN path (dense input, no projection) runs in the autocast dtype; with a
        projection its generic path returns output and h_n in the autocast dtype
        but c_n in float32; packed input without a projection stays float32.
        """
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            return None
        low = torch.get_autocast_dtype(device)
        if device == "cuda":
            # nn.LSTM's CUDA autocast wrapper (cuDNN's) runs float32 input in
            # float16 whatever the autocast dtype, and leaves other dtypes alone.
            if x.dtype != torch.float32 or not torch.backends.cudnn.enabled:
                return None
            return torch.float16, torch.float16, torch.float16
        if device != "cpu":
            return low, low, low
        if x.dtype != torch.float32:
            return None
        if self.proj_size > 0:
            return torch.float32, low, torch.float32
        if batch_sizes is None:
            return low, low, low
        return None

    def _initial_state(self, hx: Optional[Tuple[Tensor, Tensor]], x: Tensor, batch: int,
                       layer: int) -> Tuple[Tensor, Tensor]:
        """h0 [D, B, Hout], c0 [D, B, H] of one layer's D directions. Without hx, zeros made
        to size rather than a slice of zeros for all layers."""
        directions = 2 if self.bidirectional else 1
        if hx is not None:
            if self.num_layers == 1:  # the whole of hx, without two slicing ops
                return hx[0], hx[1]
            k = layer * directions
            return hx[0][k:k + directions], hx[1][k:k + directions]
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (x.new_zeros((directions, batch, real_hidden)),
                x.new_zeros((directions, batch, self.hidden_size)))

    def _run_segments(self, x: Tensor, lengths: Optional[Tensor], reset: Optional[Tensor],
                      hx: Optional[Tuple[Tensor, Tensor]], weights: List[List[Tensor]],
                      return_cells: bool):
        """All layers over a padded x: [T, B, I] cut into independent segments by lengths [B]
        and a reset mask [T, B] (fused_lstm/segments.py), as one packed batch; y:
        [T, B, D*Hout] and cells [T, B, D*H] (or None), zero past each length. With every
        sequence empty the packed batch has no rows, and the layers return empty outputs and
        their initial states."""
        steps, batch = x.size(0), x.size(1)
        lay = segments.layout(steps, batch, lengths, reset, x.device)
        state_rows = self.num_layers * (2 if self.bidirectional else 1)
        if hx is None:
            hx = (x.new_zeros((state_rows, batch, self.proj_size or self.hidden_size)),
                  x.new_zeros((state_rows, batch, self.hidden_size)))
        live_hx = (segments.initial_states(hx[0], lay), segments.initial_states(hx[1], lay))
        y, h, c, cells = self._run_layers(segments.pack_rows(x, lay), lay.batch_sizes, live_hx,
                                          lay.segments, weights, return_cells)
        return (segments.pad_rows(y, lay, steps, batch), segments.final_states(h, hx[0], lay),
                segments.final_states(c, hx[1], lay),
                None if cells is None else segments.pad_rows(cells, lay, steps, batch))

    def _run_layers(self, x: Tensor, batch_sizes: Optional[Tensor],
                    hx: Optional[Tuple[Tensor, Tensor]], batch: int,
                    weights: List[List[Tensor]], return_cells: bool = False):
        """All layers and directions. x: [T, B, I] or packed [N, I]; weights: per layer
        direction, in _all_weights order. Returns y, h_n, c_n and the last layer's cells
        ([..., D*H]; None unless return_cells)."""
        directions = 2 if self.bidirectional else 1
        if self.weight_drop > 0 and self.training:
            weights = options.drop_recurrent_weights(weights, self.weight_drop)
        dtype = x.dtype
        autocast = self._autocast_dtypes(x, batch_sizes)
        if autocast is not None:
            dtype = autocast[0]
            weights = [[w.to(dtype) for w in ws] for ws in weights]
            x = x.to(dtype)
        if hx is not None and (hx[0].dtype != dtype or hx[1].dtype != dtype):
            hx = (hx[0].to(dtype), hx[1].to(dtype))
        on_variant_op = variants.uses_variant_op(self, return_cells)
        if on_variant_op:
            norms = [[getattr(self, name) for name in names] for names in self._norm_modules]
            norms = [[t.to(dtype) for n in ns for t in (n.weight, n.bias)] for ns in norms]
            norms = norms or [[] for _ in weights]

        cells = None
        h_n: List[Tensor] = []  # [directions, B, Hout] per layer
        c_n: List[Tensor] = []  # [directions, B, H] per layer
        layer_input = x
        for layer in range(self.num_layers):
            layer_weights = [w for ws in weights[layer * directions:(layer + 1) * directions]
                             for w in ws]
            if on_variant_op:
                here = slice(layer * directions, (layer + 1) * directions)
                layer_input, h, c, cells = variants.run_layer(
                    self, layer_input, batch_sizes, *self._initial_state(hx, x, batch, layer),
                    weights[here], norms[here], batch)
            else:
                layer_input, h, c = lstm_layer(
                    layer_input, batch_sizes, *self._initial_state(hx, x, batch, layer),
                    layer_weights, self.bias, self.proj_size > 0, self.bidirectional)
            h_n.append(h)
            c_n.append(c)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        y = layer_input
        h = h_n[0] if len(h_n) == 1 else torch.cat(h_n)
        c = c_n[0] if len(c_n) == 1 else torch.cat(c_n)
        if autocast is not None:
            y, h, c = y.to(autocast[1]), h.to(autocast[1]), c.to(autocast[2])
            cells = None if cells is None else cells.to(autocast[2])
        return y, h, c, cells if return_cells else None


def convert(model: nn.Module) -> nn.Module:
    """Replace every nn.LSTM inside `model` (or `model` itself) with a FusedLSTM.

    Parameters are copied, so outputs are unchanged. Returns the model; when
    `model` is itself an nn.LSTM the new FusedLSTM is returned.
    """
    if isinstance(model, nn.LSTM):
        return FusedLSTM.from_lstm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.LSTM):
            setattr(model, name, FusedLSTM.from_lstm(child))
        else:
            convert(child)
    return model
