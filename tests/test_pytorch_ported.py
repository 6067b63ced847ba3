"""PyTorch's own nn.LSTM tests, ported to FusedLSTM.

FusedLSTM is meant to be a drop-in replacement for ``torch.nn.LSTM``, so the
tests PyTorch runs on nn.LSTM should pass on it too. The tests here are ported
from PyTorch's sources (the torch 2.13-era tree):

* ``test/test_nn.py`` (``TestNN``, ``TestNNDeviceType``): every test that runs
  ``nn.LSTM``, or ``nn.RNNBase`` generically in its LSTM mode, on the CPU;
* ``test/nn/test_pruning.py``: ``test_rnn_pruning``;
* ``torch/testing/_internal/common_modules.py``: the ``nn.LSTM`` ModuleInfo
  entry (``module_inputs_torch_nn_LSTM``, ``module_error_inputs_torch_nn_RNN_GRU``)
  and the generic checks ``test/test_modules.py`` runs on it.

How they were ported: ``nn.LSTM`` is replaced by ``FusedLSTM``. Where a test
compares numbers, FusedLSTM is compared with an nn.LSTM holding the same weights
(float32 to 1e-5, float64 to 1e-10, relative to the largest magnitude). Where a
test expects an exception, nn.LSTM is checked to raise it in the same test, then
FusedLSTM. The cuDNN/CUDA-only parts are adapted to compare against nn.LSTM on
the CPU, or kept behind a CUDA skip. PyTorch's TestCase helpers are replaced by
plain pytest and ``torch.testing.assert_close``; the ModuleInfo inputs are built
here rather than imported (``torch.testing._internal`` needs ``expecttest``).

Each test names its source in a comment. Some tests cover nn.LSTM behaviour that
FusedLSTM may not have yet (``_flat_weights``, weights reparametrized by
``torch.nn.utils.parametrize``, ``weight_norm`` or ``prune``, weights replaced by
plain tensors, ``__setstate__`` of old checkpoints): nn.LSTM's behaviour defines
what they expect.
"""

import copy
import io
import itertools
import pickle
import re
import warnings

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as prune
import torch.nn.utils.rnn as rnn_utils
from torch import nn
from torch.nn import Parameter
from torch.nn.utils.rnn import PackedSequence
from torch.testing import make_tensor

import fused_lstm
from fused_lstm import FusedLSTM

REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and fused_lstm.cuda_available()),
    reason="needs a CUDA device and fused_lstm's CUDA kernels")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_tf32():
    """Full float32 CUDA matmuls (no TF32) on both sides, restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def assert_match(got, want, rel=None, what="value"):
    """got == want to rel (by default REL_TOL of want's dtype), relative to the
    largest magnitude of either; recurses into tuples, lists and PackedSequences."""
    if isinstance(want, PackedSequence):
        assert isinstance(got, PackedSequence), f"{what}: expected a PackedSequence"
        assert_match(got.data, want.data, rel, what + ".data")
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            a, b = getattr(got, field), getattr(want, field)
            assert (a is None) == (b is None), f"{what}.{field}"
            if b is not None:
                assert torch.equal(a.cpu(), b.cpu()), f"{what}.{field}"
        return
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            assert_match(g, w, rel, f"{what}[{i}]")
        return
    if want is None:
        assert got is None, f"{what}: expected None"
        return
    assert isinstance(got, torch.Tensor), f"{what}: expected a Tensor, got {type(got)}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.numel() == 0:
        return
    g, w = got.detach().cpu(), want.detach().cpu()
    tol = rel if rel is not None else REL_TOL[w.dtype]
    scale = torch.maximum(w.abs().max(), g.abs().max()).clamp_min(1e-30)
    err = ((g - w).abs().max() / scale).item()
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def make_pair(*args, dtype=torch.float64, **kwargs):
    """An nn.LSTM and a FusedLSTM holding the same weights."""
    ref = nn.LSTM(*args, dtype=dtype, **kwargs)
    fused = FusedLSTM(*args, dtype=dtype, **kwargs)
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused


def _raises_like_nn_lstm(exc_type, call_ref, call_fused, match=None):
    with pytest.raises(exc_type, match=match):
        call_ref()
    with pytest.raises(exc_type, match=match):
        call_fused()


def _num_flat_parameters(m):
    return sum(isinstance(p, Parameter) for p in m._flat_weights)


# ---------------------------------------------------------------------------
# test/test_nn.py :: TestNN
# ---------------------------------------------------------------------------

# Ported from pytorch test/test_nn.py::TestNN.test_rnn_args_check (LSTM mode)
def test_rnn_args_check():
    input_size = 3
    hidden_size = 5
    num_layers = 2
    batch_size = 4
    seq_len = 6
    num_directions = 1
    bad_size = 7  # prime number so that no size can divide it.

    correct_input_shape = (seq_len, batch_size, input_size)
    correct_hidden_shape = (num_layers * num_directions, batch_size, hidden_size)

    def update_shape(shape, dim, new_dim_size):
        new_shape = list(shape)
        new_shape[dim] = new_dim_size
        return tuple(new_shape)

    def get_inputs(input_shape, hidden_shape):
        input = torch.randn(input_shape)
        hidden = torch.randn(hidden_shape)
        if hidden_shape == correct_hidden_shape:
            return [(input, (hidden, hidden))]
        good_hidden = torch.randn(correct_hidden_shape)
        return [(input, (hidden, good_hidden)), (input, (good_hidden, hidden))]

    def test(input_shape, hidden_shape):
        for input, hidden in get_inputs(input_shape, hidden_shape):
            for cls in (nn.LSTM, FusedLSTM):
                model = cls(input_size, hidden_size, num_layers)
                with pytest.raises(RuntimeError):
                    model(input, hidden)

    # Incorrect input batch size
    test(update_shape(correct_input_shape, 1, bad_size), correct_hidden_shape)
    # Incorrect hidden batch size
    test(correct_input_shape, update_shape(correct_hidden_shape, 1, bad_size))
    # Incorrect input size
    test(update_shape(correct_input_shape, 2, bad_size), correct_hidden_shape)
    # Incorrect hidden size
    test(correct_input_shape, update_shape(correct_hidden_shape, 2, bad_size))
    # Incorrect hidden[0]
    test(correct_input_shape, update_shape(correct_hidden_shape, 0, bad_size))


# Ported from pytorch test/test_nn.py::TestNN.test_projections_lstm_args_check
def test_projections_lstm_args_check():
    input_size = 3
    hidden_size = 5
    proj_size = 2
    num_layers = 2
    batch_size = 4
    seq_len = 6
    num_directions = 1
    bad_size = 7  # prime number so that no size can divide it.

    def test(input_shape, hidden_h_shape, hidden_c_shape):
        input = torch.randn(input_shape)
        hidden = (torch.randn(hidden_h_shape), torch.randn(hidden_c_shape))
        for cls in (nn.LSTM, FusedLSTM):
            model = cls(input_size, hidden_size, num_layers, proj_size=proj_size)
            with pytest.raises(RuntimeError):
                model(input, hidden)

    correct_input_shape = (seq_len, batch_size, input_size)
    correct_hidden_h_shape = (num_layers * num_directions, batch_size, proj_size)
    correct_hidden_c_shape = (num_layers * num_directions, batch_size, hidden_size)

    def update_shape(shape, dim, new_dim_size):
        new_shape = list(shape)
        new_shape[dim] = new_dim_size
        return tuple(new_shape)

    # Incorrect input batch size
    test(update_shape(correct_input_shape, 1, bad_size), correct_hidden_h_shape,
         correct_hidden_c_shape)
    # Incorrect hidden batch size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 1, bad_size),
         update_shape(correct_hidden_c_shape, 1, bad_size))
    # Incorrect input size
    test(update_shape(correct_input_shape, 2, bad_size), correct_hidden_h_shape,
         correct_hidden_c_shape)
    # Incorrect hidden size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 2, bad_size),
         update_shape(correct_hidden_c_shape, 2, bad_size))
    # Incorrect hidden[0]
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 0, bad_size),
         update_shape(correct_hidden_c_shape, 0, bad_size))
    # Incorrect proj size = hidden size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 0, hidden_size),
         correct_hidden_c_shape)
    # Incorrect proj size != hidden size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 0, bad_size),
         correct_hidden_c_shape)
    # Incorrect cell size != hidden size
    test(correct_input_shape, correct_hidden_h_shape,
         update_shape(correct_hidden_c_shape, 0, bad_size))


# Ported from pytorch test/test_nn.py::TestNN.test_rnn_check_device (LSTM mode).
# The original needs two GPUs; the cuda:1 part is skipped with one.
@requires_cuda
def test_rnn_check_device():
    input_size, hidden_size, num_layers, batch_size, seq_len = 3, 5, 2, 4, 6
    input = torch.randn(seq_len, batch_size, input_size)
    hidden = torch.randn(num_layers, batch_size, hidden_size)
    for cls in (nn.LSTM, FusedLSTM):
        model = cls(input_size, hidden_size, num_layers)
        model_cuda = copy.deepcopy(model).to("cuda:0")

        # input and weights are not at the same device
        with pytest.raises(RuntimeError, match="Input and parameter tensors are not at the same device"):
            model(input.to("cuda:0"))
        with pytest.raises(RuntimeError, match="Input and parameter tensors are not at the same device"):
            model_cuda(input)

        # input and hiddens are not at the same device
        with pytest.raises(RuntimeError, match="Input and hidden tensors are not at the same device"):
            model(input, (hidden.to("cuda:0"), hidden.to("cuda:0")))
        with pytest.raises(RuntimeError, match="Input and hidden tensors are not at the same device"):
            model_cuda(input.to("cuda:0"), (hidden, hidden))

        # hidden tensors are not at the same CUDA device
        if torch.cuda.device_count() >= 2:
            with pytest.raises(RuntimeError, match="Input and hidden tensors are not at the same device"):
                model(input.to("cuda:0"), (hidden.to("cuda:0"), hidden.to("cuda:1")))


# Ported from pytorch test/test_nn.py::TestNN.test_projections_lstm_check_device.
# The original needs two GPUs; the cuda:1 part is skipped with one.
@requires_cuda
def test_projections_lstm_check_device():
    input_size, hidden_size, proj_size, num_layers, batch_size, seq_len = 3, 5, 2, 2, 4, 6
    input = torch.randn(seq_len, batch_size, input_size)
    hidden_h = torch.randn(num_layers, batch_size, proj_size)
    hidden_c = torch.randn(num_layers, batch_size, hidden_size)
    for cls in (nn.LSTM, FusedLSTM):
        model = cls(input_size, hidden_size, num_layers, proj_size=proj_size)
        with pytest.raises(RuntimeError, match="Input and parameter tensors are not at the same device"):
            model(input.to("cuda:0"))
        with pytest.raises(RuntimeError, match="Input and hidden tensors are not at the same device"):
            model(input, (hidden_h.to("cuda:0"), hidden_c.to("cuda:0")))
        if torch.cuda.device_count() >= 2:
            with pytest.raises(RuntimeError, match="Input and hidden tensors are not at the same device"):
                model(input.to("cuda:0"), (hidden_h.to("cuda:0"), hidden_c.to("cuda:1")))


# Ported from pytorch test/test_nn.py::TestNN.test_rnn_initial_hidden_state (LSTM mode)
def test_rnn_initial_hidden_state():
    ref, fused = make_pair(30, 20, 2, dtype=torch.float32)
    input = torch.randn(10, 32, 30)
    hidden = torch.zeros(2, 32, 20)  # an explicit zero state must equal the default one
    output1, hidden1 = fused(input, (hidden, hidden))
    output2, hidden2 = fused(input)
    torch.testing.assert_close(output1, output2)
    torch.testing.assert_close(hidden1, hidden2)
    assert_match((output2, hidden2), ref(input))


# Ported from pytorch test/test_nn.py::TestNN.test_projections_lstm_initial_hidden_state
def test_projections_lstm_initial_hidden_state():
    for bidir in [False, True]:
        ref, fused = make_pair(30, 20, 2, bidirectional=bidir, proj_size=10, dtype=torch.float32)
        num_dirs = 2 if bidir else 1
        input = torch.randn(10, 32, 30)
        hidden_h = torch.zeros(2 * num_dirs, 32, 10)
        hidden_c = torch.zeros(2 * num_dirs, 32, 20)
        output1, hidden1 = fused(input, (hidden_h, hidden_c))
        output2, hidden2 = fused(input)
        torch.testing.assert_close(output1, output2)
        torch.testing.assert_close(hidden1, hidden2)
        assert_match((output2, hidden2), ref(input))


# Ported from pytorch test/test_nn.py::TestNN._test_RNN_cpu_vs_cudnn, i.e.
# test_RNN_cpu_vs_cudnn_no_dropout (dropout=0) and test_RNN_cpu_vs_cudnn_with_dropout
# (dropout=1, the only deterministic non-zero value), LSTM and LSTM-with-projections
# parts. Adapted: instead of nn.LSTM on CPU against cuDNN, FusedLSTM against nn.LSTM
# on the CPU, in float64, with the same grid of bias, bidirectional, batch_first,
# non-contiguous tensors and packed variable lengths (list or tensor).
@pytest.mark.parametrize("dropout", [0, 1])
def test_RNN_cpu_vs_cudnn(dropout):
    dtype = torch.double

    def forward_backward(rnn, input_val, grad_output, weights_val, hx_val, grad_hy,
                         cx_val=None, grad_cy=None):
        for x_layer, y_layer in zip(rnn.all_weights, weights_val):
            for x, y in zip(x_layer, y_layer):
                x.data.copy_(y.data)

        if isinstance(input_val, rnn_utils.PackedSequence):
            input = rnn_utils.PackedSequence(
                input_val.data.detach().clone().requires_grad_(True), input_val.batch_sizes)
            input_var = input.data
        else:
            input = input_val.clone().requires_grad_(True)
            input_var = input
        if cx_val is None:
            hx = (hx_val.clone().requires_grad_(True), hx_val.add(1).requires_grad_(True))
        else:
            hx = (hx_val.clone().requires_grad_(True), cx_val.add(1).requires_grad_(True))

        output, hy = rnn(input, hx)
        if isinstance(output, rnn_utils.PackedSequence):
            output = output.data
        if grad_cy is None:
            torch.autograd.backward([output, hy[0], hy[1]], [grad_output, grad_hy, grad_hy + 1])
        else:
            torch.autograd.backward([output, hy[0], hy[1]], [grad_output, grad_hy, grad_cy + 1])

        return {"output": output.detach(),
                "hy": hy[0].detach(),
                "cy": hy[1].detach(),
                "grad_input": input_var.grad,
                "grad_hx": hx[0].grad,
                "grad_cx": hx[1].grad,
                "weight_grads": [[w.grad for w in layer] for layer in rnn.all_weights]}

    input_size = 10
    hidden_size = 6
    proj_size = 3
    num_layers = 2
    seq_length = 7
    batch = 6

    def make_noncontig(tensor):
        ndim = tensor.dim()
        return torch.stack([tensor.clone().zero_(), tensor], ndim).select(ndim, 1)

    def compare(outputs_fused, outputs_ref):
        assert list(outputs_fused.keys()) == list(outputs_ref.keys())
        for key in outputs_ref:
            assert_match(outputs_fused[key], outputs_ref[key], what=key)

    for use_proj in (False, True):
        for bias, bidirectional, batch_first, contig, variable_len, lens_as_tensor \
                in itertools.product((True, False), repeat=6):
            if lens_as_tensor and not variable_len:
                continue  # the same run as with lens_as_tensor=False
            num_directions = 2 if bidirectional else 1
            out_size = proj_size if use_proj else hidden_size
            if batch_first:
                input_val = torch.randn(batch, seq_length, input_size, dtype=dtype)
                grad_output = torch.randn(batch, seq_length, out_size * num_directions, dtype=dtype)
            else:
                input_val = torch.randn(seq_length, batch, input_size, dtype=dtype)
                grad_output = torch.randn(seq_length, batch, out_size * num_directions, dtype=dtype)

            hx_val = torch.randn(num_layers * num_directions, batch, out_size, dtype=dtype)
            grad_hy = torch.randn(num_layers * num_directions, batch, out_size, dtype=dtype)
            cx_val = grad_cy = None
            if use_proj:
                cx_val = torch.randn(num_layers * num_directions, batch, hidden_size, dtype=dtype)
                grad_cy = torch.randn(num_layers * num_directions, batch, hidden_size, dtype=dtype)

            if not contig:
                grad_output = make_noncontig(grad_output)
                grad_hy = make_noncontig(grad_hy)
                input_val = make_noncontig(input_val)
                hx_val = make_noncontig(hx_val)
                if use_proj:
                    grad_cy = make_noncontig(grad_cy)
                    cx_val = make_noncontig(cx_val)

            if variable_len:
                lengths = [7, 5, 5, 2, 1, 1]
                if lens_as_tensor:
                    lengths = torch.tensor(lengths, dtype=torch.long)
                input_val = rnn_utils.pack_padded_sequence(input_val, lengths, batch_first=batch_first)
                grad_output = rnn_utils.pack_padded_sequence(grad_output, lengths,
                                                             batch_first=batch_first).data

            kwargs = dict(bias=bias, dropout=dropout, bidirectional=bidirectional,
                          batch_first=batch_first, proj_size=proj_size if use_proj else 0)
            rnn = nn.LSTM(input_size, hidden_size, num_layers, **kwargs).to(dtype)
            outputs_ref = forward_backward(rnn, input_val, grad_output, rnn.all_weights,
                                           hx_val, grad_hy, cx_val, grad_cy)
            rnn_fused = FusedLSTM(input_size, hidden_size, num_layers, **kwargs).to(dtype)
            outputs_fused = forward_backward(rnn_fused, input_val, grad_output, rnn.all_weights,
                                             hx_val, grad_hy, cx_val, grad_cy)
            compare(outputs_fused, outputs_ref)


# Ported from pytorch test/test_nn.py::TestNN.test_RNN_cudnn_weight_norm.
# Adapted: the original moves the weight-normed LSTM to CUDA; here it stays on the
# CPU and the expected output is nn.LSTM's before weight norm.
def test_RNN_cudnn_weight_norm():
    input_size = 10
    hidden_size = 6
    num_layers = 2
    seq_length = 7
    batch = 6

    def check_weight_norm(cfg, name):
        ref, fused = make_pair(input_size, hidden_size, num_layers, dtype=torch.float32, **cfg)
        input = torch.randn(seq_length, batch, input_size)
        expected_output = ref(input)

        for m in (ref, fused):
            # adds weight normalization
            m = torch.nn.utils.weight_norm(m, name=name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert_match(m(input), expected_output, what=f"{type(m).__name__} weight-normed")
            # remove weight norm
            m = torch.nn.utils.remove_weight_norm(m, name=name)
            assert_match(m(input), expected_output, what=f"{type(m).__name__} after removal")

    check_weight_norm({}, "weight_hh_l0")
    check_weight_norm(dict(proj_size=3), "weight_hr_l0")


# Ported from pytorch test/test_nn.py::TestNN.test_partial_flat_weights (CPU variant).
# The original deletes a weight, moves the module to CUDA and assigns the moved weight
# back (a plain Tensor, not a Parameter); here the module moves to float64 instead.
def test_partial_flat_weights():
    input_size = 10
    hidden_size = 6
    num_layers = 2
    inp = torch.randn(3, 2, 10)
    out_double = {}
    for cls in (nn.LSTM, FusedLSTM):
        torch.manual_seed(1)  # same weights for both classes
        m = cls(input_size, hidden_size, num_layers)
        out_expected = m(inp)
        # deletes an attribute of original LSTM
        weight_orig = m.weight_hh_l0
        del m.weight_hh_l0
        assert not hasattr(m, "weight_hh_l0")
        # verifies that moving the module with only some attributes defined
        # does not throw an error
        m.to(torch.float64)
        # recompute the weight and make sure that module can be used
        m.weight_hh_l0 = weight_orig.detach().to(torch.float64)
        assert not isinstance(m.weight_hh_l0, Parameter)
        out = m(inp.double())
        assert_match(out[0].float(), out_expected[0], rel=1e-5, what=cls.__name__)
        out_double[cls] = out
    assert_match(out_double[FusedLSTM], out_double[nn.LSTM])


# Ported from pytorch test/test_nn.py::TestNN.test_partial_flat_weights (as written:
# the module moves to CUDA with only some weights defined).
@requires_cuda
def test_partial_flat_weights_cuda(no_tf32):
    m = FusedLSTM(10, 6, 2)
    inp = torch.randn(3, 2, 10)
    out_expected = m(inp)
    weight_orig = m.weight_hh_l0
    del m.weight_hh_l0
    assert not hasattr(m, "weight_hh_l0")
    m.cuda()
    m.weight_hh_l0 = weight_orig.cuda()
    assert_match(m(inp.cuda())[0].cpu(), out_expected[0], rel=1e-5)


# Ported from pytorch test/test_nn.py::TestNN.test_error_RNN_seq_len_zero (LSTM, CPU part)
def test_error_RNN_seq_len_zero():
    for bidirectional in [True, False]:
        input = torch.randn(0, 10, 5)
        for cls in (nn.LSTM, FusedLSTM):
            rnn = cls(5, 6, bidirectional=bidirectional)
            with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0 in RNN"):
                rnn(input)


# Ported from pytorch test/test_nn.py::TestNN.test_RNN_input_size_zero (LSTM, CPU part)
def test_RNN_input_size_zero():
    for cls in (nn.LSTM, FusedLSTM):
        input = torch.zeros((5, 0, 3))
        rnn = cls(input_size=3, hidden_size=4)
        outs = rnn(input)
        assert outs[0].shape == torch.Size([5, 0, 4])
        # Check that backward does not cause a hard error
        outs[0].sum().backward()


# Ported from pytorch test/test_nn.py::TestNN.test_RNN_dropout_state, run for the
# LSTM mode (the original runs nn.RNN, CUDA and CPU; here CPU, nn.LSTM and FusedLSTM).
def test_RNN_dropout_state():
    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    for cls in (nn.LSTM, FusedLSTM):
        for p in (0, 0.1234):
            for train in (True, False):
                rnn = cls(100, 100, 2, bias=False, dropout=p)
                rnn.train(train)
                input = torch.rand(1, 1, 100)
                hx = (torch.rand(2, 1, 100), torch.rand(2, 1, 100))

                output1, hy1 = rnn(input, hx)
                output2, hy2 = rnn(input, hx)

                buf = io.BytesIO()
                torch.save(rnn, buf)
                buf.seek(0)
                rnn2 = torch.load(buf, weights_only=False)
                rnn2.flatten_parameters()
                output3, hy3 = rnn2(input, hx)

                if p == 0 or not train:
                    torch.testing.assert_close(output1, output2)
                    torch.testing.assert_close(output1, output3)
                    torch.testing.assert_close(hy1, hy2)
                    torch.testing.assert_close(hy1, hy3)
                else:
                    assert not torch.equal(output1, output2)
                    assert not torch.equal(output1, output3)
                    assert not same(hy1, hy2)
                    assert not same(hy1, hy3)


# Ported from pytorch test/test_nn.py::TestNN.test_RNN_change_dropout, run for the
# LSTM mode (the original runs nn.RNN): `rnn.dropout` changed between calls.
def test_RNN_change_dropout():
    for train in (True, False):
        ref, fused = make_pair(100, 100, 2, dropout=0)
        input = torch.rand(3, 2, 100, dtype=torch.double)
        for rnn in (ref, fused):
            rnn.train(train)

        prev_output = None
        for p in (0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0):
            outs = {}
            for rnn in (ref, fused):
                rnn.dropout = p
                output1, hy1 = rnn(input)
                output2, hy2 = rnn(input)
                outs[type(rnn)] = output1

                if p == 0 or p == 1 or not train:
                    torch.testing.assert_close(output1, output2)
                    torch.testing.assert_close(hy1, hy2)
                else:
                    assert not torch.equal(output1, output2)
                    assert not all(torch.equal(a, b) for a, b in zip(hy1, hy2))

                if prev_output is not None:
                    if not train:
                        torch.testing.assert_close(output1, prev_output[type(rnn)])
                        torch.testing.assert_close(output2, prev_output[type(rnn)])
                    else:
                        assert not torch.equal(output1, prev_output[type(rnn)])
                        assert not torch.equal(output2, prev_output[type(rnn)])
            if p == 0 or p == 1 or not train:  # deterministic: FusedLSTM matches nn.LSTM
                assert_match(outs[FusedLSTM], outs[nn.LSTM], what=f"p={p}")
            prev_output = outs


# Ported from pytorch test/test_nn.py::TestNN.test_rnn_weight_norm
def test_rnn_weight_norm():
    def check_weight_norm(l, name, num_params):
        # This Module has 4 or 5 parameters called:
        # 'weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', weight_hr_l0

        # Applying weight norm on one of them causes it to become a tensor
        l = torch.nn.utils.weight_norm(l, name=name)
        assert _num_flat_parameters(l) == num_params - 1

        # Removing the weight norm reparametrization restores the Parameter
        l = torch.nn.utils.remove_weight_norm(l, name=name)
        assert _num_flat_parameters(l) == num_params

        # Make sure that, upon removal of the reparametrization, the
        # `._parameters` and `.named_parameters` contain the right params.
        # Specifically, the original weight ('weight_ih_l0') should be placed
        # back in the parameters, while the reparametrization components
        # ('weight_ih_l0_v' and 'weight_ih_l0_g') should be removed.
        assert name in l._parameters
        assert l._parameters[name] is not None
        assert name + "_v" not in l._parameters
        assert name + "_g" not in l._parameters
        assert name in dict(l.named_parameters())
        assert dict(l.named_parameters())[name] is not None
        assert name + "_v" not in dict(l.named_parameters())
        assert name + "_g" not in dict(l.named_parameters())

    for cls in (nn.LSTM, FusedLSTM):
        check_weight_norm(cls(32, 32), "weight_ih_l0", 4)
        check_weight_norm(cls(32, 32, proj_size=16), "weight_hr_l0", 5)


# Adapted from pytorch test/test_nn.py::TestNN.test_rnn_weight_norm and
# test_RNN_cudnn_weight_norm: the same checks (the reparametrized weight becomes a
# plain tensor in `_flat_weights`, outputs are unchanged, removal restores the
# Parameter) with the torch.nn.utils.parametrize API: parametrizations.weight_norm,
# parametrizations.spectral_norm and a user parametrization.
@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "custom"])
def test_rnn_parametrizations(kind):
    class Scale(nn.Module):
        def forward(self, w):
            return 0.5 * w

    def register(m, name):
        torch.manual_seed(3)  # spectral_norm draws its u, v: the same for both modules
        if kind == "weight_norm":
            torch.nn.utils.parametrizations.weight_norm(m, name)
        elif kind == "spectral_norm":
            torch.nn.utils.parametrizations.spectral_norm(m, name)
        else:
            parametrize.register_parametrization(m, name, Scale())

    for cfg, name, num_params in ((dict(), "weight_ih_l0", 8),
                                  (dict(proj_size=4), "weight_hr_l0", 10)):
        ref, fused = make_pair(6, 8, 2, dtype=torch.float64, **cfg)
        modules = {"nn.LSTM": ref, "FusedLSTM": fused}  # (parametrizing changes their classes)
        x = torch.randn(5, 3, 6, dtype=torch.float64)
        for m in modules.values():
            register(m, name)
            assert parametrize.is_parametrized(m, name)
            if kind == "spectral_norm":
                m.eval()  # else each read of the weight runs a power iteration and changes it
        outs = {}
        for key, m in modules.items():
            outs[key] = m(x)
            idx = m._flat_weights_names.index(name)
            # the reparametrized weight is a plain tensor, the current value
            assert _num_flat_parameters(m) == num_params - 1, key
            assert torch.equal(m._flat_weights[idx], getattr(m, name)), key
            (outs[key][0].sum() + outs[key][1][1].sum()).backward()
        assert_match(outs["FusedLSTM"], outs["nn.LSTM"])
        assert_match([p.grad for p in fused.parameters()], [p.grad for p in ref.parameters()],
                     what="parameter grads")

        for key, m in modules.items():
            parametrize.remove_parametrizations(m, name)
            assert not parametrize.is_parametrized(m)
            assert name in m._parameters
            outs[key] = m(x)
            assert _num_flat_parameters(m) == num_params, key
        assert_match(outs["FusedLSTM"], outs["nn.LSTM"])


# Adapted from pytorch test/test_nn.py::TestNN.test_rnn_weight_norm, for the hook-based
# torch.nn.utils.spectral_norm (the weight is a plain attribute recomputed before
# each forward, in training mode after a power iteration).
def test_rnn_spectral_norm_hook():
    ref, fused = make_pair(6, 8, 2, dtype=torch.float64)
    x = torch.randn(5, 3, 6, dtype=torch.float64)
    for m in (ref, fused):
        torch.manual_seed(3)
        torch.nn.utils.spectral_norm(m, name="weight_hh_l1")
        assert _num_flat_parameters(m) == 7
    for _ in range(2):  # the power iteration moves u, v: both modules alike
        assert_match(fused(x), ref(x))
    for m in (ref, fused):
        m.eval()
    assert_match(fused(x), ref(x))
    for m in (ref, fused):
        torch.nn.utils.remove_spectral_norm(m, name="weight_hh_l1")
        assert "weight_hh_l1" in m._parameters
    assert_match(fused(x), ref(x))
    assert _num_flat_parameters(fused) == 8


# Ported from pytorch test/test_nn.py::TestNN.test_cudnn_forward_exception (it runs
# on the CPU; LSTM and LSTM-with-projections entries)
def test_cudnn_forward_exception():
    x_wrong = torch.randn(2, 3, 3)
    x_right = torch.randn(2, 3, 10)
    hidden = (torch.randn(1, 2, 19), torch.randn(1, 2, 19))
    for cfg in (dict(), dict(proj_size=10)):
        for cls in (nn.LSTM, FusedLSTM):
            rnn = cls(10, 20, batch_first=True, **cfg)
            with pytest.raises(RuntimeError, match="Expected hidden.*size.*got"):
                rnn(x_right, hidden)
            with pytest.raises(RuntimeError, match=re.escape("input.size(-1) must be equal to input_size")):
                rnn(x_wrong)


# Ported from pytorch test/test_nn.py::TestNN.test_cudnn_weight_tying (LSTM entries).
# Adapted: the original ties bias_ih_l0_reverse to bias_ih_l0, takes an SGD step on
# CUDA and compares with the CPU; here FusedLSTM is compared with nn.LSTM on the CPU.
def test_cudnn_weight_tying():
    for proj_size in (0, 10):
        ref, fused = make_pair(10, 20, batch_first=True, bidirectional=True, proj_size=proj_size)
        input = torch.randn(5, 4, 10, dtype=torch.double)
        hx = torch.randn(2, 5, proj_size or 20, dtype=torch.double)
        cx = torch.randn(2, 5, 20, dtype=torch.double)
        outputs = {}
        for rnn in (ref, fused):
            rnn.bias_ih_l0_reverse = rnn.bias_ih_l0
            assert len(list(rnn.parameters())) == (9 if proj_size else 7)
            opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
            opt.zero_grad()
            output = rnn(input, (hx, cx))
            output[0].sum().backward()
            opt.step()
            assert rnn.bias_ih_l0_reverse is rnn.bias_ih_l0
            outputs[type(rnn)] = (output, rnn(input, (hx, cx)))
        assert_match(outputs[FusedLSTM], outputs[nn.LSTM])
        assert_match(fused.bias_ih_l0, ref.bias_ih_l0)


# ---------------------------------------------------------------------------
# test/test_nn.py :: TestNNDeviceType (CPU instantiation)
# ---------------------------------------------------------------------------

# Ported from pytorch test/test_nn.py::TestNNDeviceType.test_rnn_retain_variables
# (LSTM entry, float64)
def test_rnn_retain_variables():
    ref, fused = make_pair(10, 20, num_layers=2)
    grads_by_cls = {}
    for rnn in (ref, fused):
        torch.manual_seed(5)  # the same input for both
        input = torch.randn(5, 6, 10, dtype=torch.double, requires_grad=True)
        output = rnn(input)
        output[0].sum().backward(retain_graph=True)
        grads = [input.grad.data.clone()] + [p.grad.data.clone() for p in rnn.parameters()]
        for _ in range(4):
            rnn.zero_grad()
            input.grad.data.zero_()
            output[0].sum().backward(retain_graph=True)
            grads2 = [input.grad.data] + [p.grad.data for p in rnn.parameters()]
            torch.testing.assert_close(grads, grads2)
        grads_by_cls[type(rnn)] = grads
    assert_match(grads_by_cls[FusedLSTM], grads_by_cls[nn.LSTM])


# Ported from pytorch test/test_nn.py::TestNNDeviceType.test_LSTM_grad_and_gradgrad
def test_LSTM_grad_and_gradgrad():
    hsize = 4
    inp = torch.rand(1, 3, hsize, dtype=torch.double, requires_grad=True)
    for bias in [True, False]:
        mod = FusedLSTM(hsize, hsize, bias=bias).double()

        def flatten_out(inp):
            out = mod(inp)
            return out[0], out[1][0], out[1][1]

        assert torch.autograd.gradcheck(flatten_out, (inp,), check_batched_grad=False)
        assert torch.autograd.gradgradcheck(flatten_out, (inp,), check_batched_grad=False)


# Ported from pytorch test/test_nn.py::TestNNDeviceType.
# test_LSTM_differentiable_backward_using_oneDNN. Adapted: the original compares
# nn.LSTM with oneDNN off and on; here FusedLSTM against nn.LSTM (oneDNN off), for
# the first derivative (create_graph=True) and the backward through it.
def test_LSTM_differentiable_backward_using_oneDNN():
    batch = 10
    seq_len = 12
    input = 3
    net = nn.LSTM(input, 3, 20, batch_first=True)
    net_fused = FusedLSTM.from_lstm(net)
    x = torch.rand(batch, seq_len, input)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)

    with torch.backends.mkldnn.flags(enabled=False):
        out1, _ = net(x1)
        der_out1 = torch.autograd.grad(out1, x1, grad_outputs=torch.ones_like(out1),
                                       retain_graph=True, create_graph=True)[0]
        loss1 = der_out1.sum()
        loss1.backward(retain_graph=True)

    out2, _ = net_fused(x2)
    der_out2 = torch.autograd.grad(out2, x2, grad_outputs=torch.ones_like(out2),
                                   retain_graph=True, create_graph=True)[0]
    loss2 = der_out2.sum()
    loss2.backward(retain_graph=True)

    assert_match(der_out2, der_out1, what="d out / d x")
    assert_match(x2.grad, x1.grad, what="x.grad")
    assert_match([p.grad for p in net_fused.parameters()], [p.grad for p in net.parameters()],
                 what="parameter grads")


# Ported from pytorch test/test_nn.py::TestNNDeviceType.test_variable_sequence
# (CPU, float32); FusedLSTM's packed run is also compared with nn.LSTM's.
def test_variable_sequence():
    dtype = torch.float
    prec = 1e-5  # dtype2prec_DONTUSE[torch.float]

    def pad(var, length):
        if var.size(0) == length:
            return var
        return torch.cat([var, var.new_zeros(length - var.size(0), *var.size()[1:])])

    def maybe_index_tuple(maybe_tuple_of_tensors, index):
        if maybe_tuple_of_tensors is None:
            return None
        return tuple(maybe_tuple_of_tensors[j][:, index:index + 1, :].contiguous()
                     for j in range(2))

    def check_lengths(lengths, enforce_sorted, use_default_hiddens, proj_size):
        input_size = 3
        hidden_size = 4
        num_layers = 2
        bidirectional = True

        max_length = max(lengths)
        x_leaf = torch.randn(max_length, len(lengths), input_size, dtype=dtype, requires_grad=True)
        num_directions = 2 if bidirectional else 1
        ref = nn.LSTM(input_size, hidden_size, bidirectional=bidirectional,
                      num_layers=num_layers, proj_size=proj_size).to(dtype)
        lstm = FusedLSTM.from_lstm(ref)
        lstm2 = copy.deepcopy(lstm).to(dtype)
        x = x_leaf

        hidden0 = None
        if not use_default_hiddens:
            real_hidden_size = hidden_size if proj_size == 0 else proj_size
            hidden0 = (torch.randn(num_directions * num_layers, len(lengths), real_hidden_size,
                                   dtype=dtype),
                       torch.randn(num_directions * num_layers, len(lengths), hidden_size,
                                   dtype=dtype))

        # Compute sequences separately
        seq_outs = []
        seq_hiddens = []
        for i, l in enumerate(lengths):
            hidden_i = maybe_index_tuple(hidden0, i)
            out, hid = lstm2(x[:l, i:i + 1], hidden_i)
            out_pad = pad(out, max_length)
            seq_outs.append(out_pad)
            seq_hiddens.append(hid)
        seq_out = torch.cat(seq_outs, 1)
        seq_hidden = tuple(torch.cat(hids, 1) for hids in zip(*seq_hiddens))

        # Use packed format
        packed = rnn_utils.pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        packed_out, packed_hidden = lstm(packed, hidden0)
        unpacked, unpacked_len = rnn_utils.pad_packed_sequence(packed_out)
        assert_match((packed_out, packed_hidden), ref(packed, hidden0), what="packed vs nn.LSTM")

        # Check forward
        torch.testing.assert_close(packed_hidden, seq_hidden, atol=prec, rtol=0)
        torch.testing.assert_close(unpacked, seq_out, atol=prec, rtol=0)
        assert unpacked_len.tolist() == list(lengths)

        # Check backward
        seq_out.sum().backward()
        grad_x = x_leaf.grad.data.clone()
        x_leaf.grad.data.zero_()
        unpacked.sum().backward()

        torch.testing.assert_close(x_leaf.grad, grad_x, atol=prec, rtol=0)
        for p1, p2 in zip(lstm.parameters(), lstm2.parameters()):
            torch.testing.assert_close(p1.grad, p2.grad, atol=2e-4, rtol=0)

    tests = [
        # enforce_sorted, lengths
        [True, [5]],
        [False, [5]],
        [True, [10, 10, 6, 2, 2, 1, 1]],
        [False, [10, 10, 6, 2, 2, 1, 1]],
        [False, [2, 1, 3, 2, 10, 5, 3]],
    ]

    for enforce_sorted, seq_lens, in tests:
        for use_default_hiddens in (True, False):
            for proj_size in [0, 2]:
                check_lengths(seq_lens, enforce_sorted, use_default_hiddens, proj_size)


# Ported from pytorch test/test_nn.py::TestNNDeviceType.test_save_lstm_compatibility:
# a module state from before proj_size existed (PyTorch <= 1.7) still loads.
def test_save_lstm_compatibility():
    for cls in (nn.LSTM, FusedLSTM):
        torch.manual_seed(0)
        model = cls(2, 3)
        x = torch.randn(32, 5, 2)
        expected = model(x)

        # Get a state dict for PyTorch 1.7 LSTM. Before PyTorch 1.8, proj_size
        # didn't exist.
        assert model.proj_size == 0
        state_dict = model.__dict__
        del state_dict["proj_size"]

        # load a model
        loaded_model = cls(2, 3)
        loaded_model.__setstate__(state_dict)
        result = loaded_model(x)
        torch.testing.assert_close(result, expected)


# Ported from pytorch test/test_nn.py::TestNNDeviceType.test_rnn_fused (LSTM entry):
# the module on CUDA (FusedLSTM here) against nn.LSTM on the CPU.
@requires_cuda
def test_rnn_fused(no_tf32):
    for dtype in (torch.float, torch.double):
        input_size, hidden_size, num_layers, seq_length, batch = 10, 6, 2, 7, 6
        input_val = torch.randn(seq_length, batch, input_size, dtype=dtype)
        grad_output = torch.randn(seq_length, batch, hidden_size, dtype=dtype)
        hx_val = torch.randn(num_layers, batch, hidden_size, dtype=dtype)
        grad_hy = torch.randn(num_layers, batch, hidden_size, dtype=dtype)
        for bias in (True, False):
            rnn = nn.LSTM(input_size, hidden_size, num_layers, bias=bias).to(dtype)
            rnn_device = FusedLSTM.from_lstm(rnn).to("cuda")
            hx = (hx_val.clone().requires_grad_(True), hx_val.clone().add(1).requires_grad_(True))
            hx_device = (hx_val.clone().cuda().requires_grad_(True),
                         hx_val.clone().cuda().add(1).requires_grad_(True))
            inp = input_val.clone().requires_grad_(True)
            inp_cu = input_val.clone().cuda().requires_grad_(True)
            output1, hy1 = rnn(inp, hx)
            output2, hy2 = rnn_device(inp_cu, hx_device)
            torch.autograd.backward([output1, hy1[0], hy1[1]], [grad_output, grad_hy, grad_hy + 1])
            torch.autograd.backward([output2, hy2[0], hy2[1]],
                                    [grad_output.cuda(), grad_hy.cuda(), (grad_hy + 1).cuda()])
            assert_match(output2, output1)
            assert_match(hy2, hy1)
            assert_match([p.grad for p in rnn_device.parameters()], [p.grad for p in rnn.parameters()])
            assert_match(inp_cu.grad, inp.grad)
            assert_match(hx_device[0].grad, hx[0].grad)
            assert_match(hx_device[1].grad, hx[1].grad)


# ---------------------------------------------------------------------------
# test/nn/test_pruning.py
# ---------------------------------------------------------------------------

# Ported from pytorch test/nn/test_pruning.py::TestPruningNN.test_rnn_pruning
def test_rnn_pruning():
    for cls in (nn.LSTM, FusedLSTM):
        l = cls(32, 32)
        # This Module has 4 parameters called:
        # 'weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0'

        # Pruning one of them causes one of the weights to become a tensor
        prune.l1_unstructured(l, "weight_ih_l0", 0.5)
        assert sum(isinstance(p, torch.nn.Parameter) for p in l._flat_weights) == 3

        # Removing the pruning reparameterization restores the Parameter
        prune.remove(l, "weight_ih_l0")
        assert sum(isinstance(p, torch.nn.Parameter) for p in l._flat_weights) == 4

        # Make sure that, upon removal of the reparameterization, the
        # `._parameters` and `.named_parameters` contain the right params.
        # Specifically, the original weight ('weight_ih_l0') should be placed
        # back in the parameters, while the reparameterization component
        # ('weight_ih_l0_orig') should be removed.
        assert "weight_ih_l0" in l._parameters
        assert l._parameters["weight_ih_l0"] is not None
        assert "weight_ih_l0_orig" not in l._parameters
        assert "weight_ih_l0" in dict(l.named_parameters())
        assert dict(l.named_parameters())["weight_ih_l0"] is not None
        assert "weight_ih_l0_orig" not in dict(l.named_parameters())


# Ported from pytorch test/nn/test_pruning.py::TestPruningNN.test_rnn_pruning, with
# numbers: `_flat_weights` holds the pruned weight, and the pruned FusedLSTM computes
# what the pruned nn.LSTM does, forward and backward, before and after prune.remove.
def test_rnn_pruning_numerics():
    ref, fused = make_pair(8, 8, 2, dtype=torch.float64)
    x = torch.randn(4, 3, 8, dtype=torch.float64)
    mask = (torch.rand(32, 8) > 0.5).to(torch.float64)
    outs = {}
    for l in (ref, fused):
        prune.custom_from_mask(l, "weight_ih_l1", mask)
        out = l(x)
        idx = l._flat_weights_names.index("weight_ih_l1")
        assert torch.equal(l._flat_weights[idx], l.weight_ih_l1)
        assert bool((l._flat_weights[idx][mask == 0] == 0).all())
        (out[0].sum() + out[1][1].sum()).backward()
        outs[type(l)] = out
    assert_match(outs[FusedLSTM], outs[nn.LSTM])
    assert_match(fused.weight_ih_l1_orig.grad, ref.weight_ih_l1_orig.grad, what="weight_ih_l1_orig.grad")
    for l in (ref, fused):
        prune.remove(l, "weight_ih_l1")
        outs[type(l)] = l(x)
    assert_match(outs[FusedLSTM], outs[nn.LSTM])


# ---------------------------------------------------------------------------
# torch/testing/_internal/common_modules.py :: ModuleInfo(torch.nn.LSTM), as run by
# test/test_modules.py :: TestModule (CPU)
# ---------------------------------------------------------------------------

def lstm_module_inputs(dtype, requires_grad=False):
    """module_inputs_torch_nn_LSTM: (constructor kwargs, forward args, batch_first),
    unbatched input, with and without (h0, c0)."""
    samples = []
    for b, b_f, bidir, proj_size in itertools.product((False, True), (False, True),
                                                      (False, True), (0, 2)):
        hidden_size = 3
        cons_args = {"input_size": 2, "hidden_size": hidden_size, "num_layers": 2,
                     "proj_size": proj_size, "batch_first": b_f, "bias": b,
                     "bidirectional": bidir}
        samples.append((cons_args, (make_tensor((2, 2), dtype=dtype, device="cpu",
                                                requires_grad=requires_grad),), b_f))
        h_out = proj_size if proj_size > 0 else hidden_size
        hx = (make_tensor((4 if bidir else 2, h_out), dtype=dtype, device="cpu",
                          requires_grad=requires_grad),
              make_tensor((4 if bidir else 2, hidden_size), dtype=dtype, device="cpu",
                          requires_grad=requires_grad))
        samples.append((cons_args, (make_tensor((3, 2), dtype=dtype, device="cpu",
                                                requires_grad=requires_grad), hx), b_f))
    return samples


def no_batch_dim_reference_lstm(m, *args, batch_first):
    """common_modules.no_batch_dim_reference_lstm: the unbatched call computed as a
    batch of one."""
    if len(args) == 1:
        inp, = args
        h = None
    else:
        inp, h = args
        h = (h[0].unsqueeze(1), h[1].unsqueeze(1))
    batch_dim = 0 if batch_first else 1
    output = m(inp.unsqueeze(batch_dim), h)
    return output[0].squeeze(batch_dim), (output[1][0].squeeze(1), output[1][1].squeeze(1))


def _module_pair(cons, dtype, training):
    ref = nn.LSTM(**cons).to(dtype)
    ref.train(training)
    fused = FusedLSTM(**cons).to(dtype)
    fused.load_state_dict(ref.state_dict(), strict=True)
    fused.train(training)
    return ref, fused


def _traverse(obj, fn):
    if isinstance(obj, (tuple, list)):
        return type(obj)(_traverse(o, fn) for o in obj)
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    return obj


# Ported from pytorch test/test_modules.py::TestModule.test_forward, on the nn.LSTM
# ModuleInfo inputs (common_modules.py::module_inputs_torch_nn_LSTM): outputs match
# nn.LSTM's and the no-batch-dim reference, and .float()/.double() convert the module.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [True, False])
def test_module_forward(dtype, training):
    for cons, args, batch_first in lstm_module_inputs(dtype):
        ref, fused = _module_pair(cons, dtype, training)
        outputs = fused(*args)
        assert_match(outputs, ref(*args), what=str(cons))
        assert_match(outputs, no_batch_dim_reference_lstm(fused, *args, batch_first=batch_first),
                     what=f"no_batch_dim {cons}")
        getattr(fused, {torch.float32: "float", torch.float64: "double"}[dtype])()
        fused(*args)
        for name, p in fused.named_parameters():
            assert p.device == torch.device("cpu") and p.dtype == dtype, name


# Ported from pytorch test/test_modules.py::TestModule.test_factory_kwargs (nn.LSTM inputs)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_factory_kwargs(dtype):
    for cons, _, _ in lstm_module_inputs(dtype):
        ref = nn.LSTM(**cons, device="cpu", dtype=dtype)
        m = FusedLSTM(**cons, device="cpu", dtype=dtype)
        for name, param in m.named_parameters():
            assert param.device == torch.device("cpu"), name
            assert param.dtype == dtype, name
        assert [(n, p.shape, p.dtype) for n, p in m.named_parameters()] == \
            [(n, p.shape, p.dtype) for n, p in ref.named_parameters()]
        assert list(m.named_buffers()) == []


# Ported from pytorch test/test_modules.py::TestModule.test_repr (nn.LSTM inputs);
# the text must also be nn.LSTM's, with the class name changed.
def test_module_repr():
    for cons, _, _ in lstm_module_inputs(torch.float32):
        ref, m = _module_pair(cons, torch.float32, True)
        assert m.__repr__() == "Fused" + ref.__repr__()
        assert str(m) == "Fused" + str(ref)


# Ported from pytorch test/test_modules.py::TestModule.test_pickle (nn.LSTM inputs):
# torch.save/torch.load, pickle and deepcopy copies give the same output.
def test_module_pickle():
    dtype = torch.float64
    for cons, args, _ in lstm_module_inputs(dtype):
        _, m = _module_pair(cons, dtype, True)
        output = m(*args)
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        m_copy = torch.load(buf, weights_only=False)
        torch.testing.assert_close(m_copy(*args), output)
        m_pickled = pickle.loads(pickle.dumps(m))
        torch.testing.assert_close(m_pickled(*args), output)
        m_deep = copy.deepcopy(m)
        torch.testing.assert_close(m_deep(*args), output)
        with torch.no_grad():
            next(m_deep.parameters()).add_(1.0)  # the copy owns its parameters
        torch.testing.assert_close(m(*args), output)


# Ported from pytorch test/test_modules.py::TestModule.test_non_contiguous_tensors
# (nn.LSTM inputs): non-contiguous inputs and grad outputs give the contiguous
# results; the contiguous ones are nn.LSTM's.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_non_contiguous_tensors(dtype):
    def make_non_contiguous(obj):
        def inner(t):
            if t.dim() == 0:
                return t
            out = torch.repeat_interleave(t, 2, dim=-1)[..., ::2].detach()
            out.requires_grad = t.requires_grad
            return out
        return _traverse(obj, inner)

    def flat(obj):
        return torch.utils._pytree.tree_flatten(obj)[0]

    def run(m, args, grad_output):
        for t in flat(args):
            t.grad = None
        m.zero_grad()
        out = m(*args)
        torch.autograd.backward(flat(out), flat(grad_output))
        return out, [t.grad for t in flat(args)], [p.grad for p in m.parameters()]

    for training in (True,):  # the original runs eval mode too: the same here (dropout 0)
        for cons, args, _ in lstm_module_inputs(dtype, requires_grad=True):
            ref, m = _module_pair(cons, dtype, training)
            grad_output = _traverse(ref(*args), lambda o: torch.randn_like(o))
            default = run(m, args, grad_output)
            assert_match(default, run(ref, args, grad_output), what=f"vs nn.LSTM {cons}")

            nc_args = make_non_contiguous(args)
            nc_grad_output = make_non_contiguous(grad_output)
            assert not flat(nc_args)[0].is_contiguous()
            for in_args, g_out in itertools.product([args, nc_args], [grad_output, nc_grad_output]):
                out, input_grads, param_grads = run(m, in_args, g_out)
                torch.testing.assert_close(out, default[0])
                torch.testing.assert_close(input_grads, default[1], atol=1e-4, rtol=0)
                torch.testing.assert_close(param_grads, default[2])


def _gradcheck_module(m, args, check):
    names = [n for n, _ in m.named_parameters()]
    flat_args, spec = torch.utils._pytree.tree_flatten(args)

    def fn(*flat_input_and_params):
        inputs = torch.utils._pytree.tree_unflatten(list(flat_input_and_params[:len(flat_args)]), spec)
        params = dict(zip(names, flat_input_and_params[len(flat_args):]))
        output = torch.func.functional_call(m, params, tuple(inputs))
        return tuple(torch.utils._pytree.tree_flatten(output)[0])

    return check(fn, tuple(flat_args) + tuple(m.parameters()), fast_mode=True,
                 check_batched_grad=False)


# The ModuleInfo inputs the gradient checks run on, to keep the file fast: each half
# covers both values of bias, batch_first, bidirectional and proj_size, and inputs
# with and without (h0, c0).
GRAD_SAMPLES = (2, 13, 23, 24)
MORE_GRAD_SAMPLES = (7, 8, 19, 28)


# Ported from pytorch test/test_modules.py::TestModule.test_grad (nn.LSTM inputs,
# float64): gradcheck of the outputs in the inputs, (h0, c0) and the parameters
# together, on 8 of the 32 inputs in training mode and 2 in eval mode (dropout is 0
# in these configurations, so the modes compute the same). The original runs all
# inputs and re-checks each parameter alone; left out for time.
def test_module_grad():
    samples = lstm_module_inputs(torch.float64, requires_grad=True)
    for training, chosen in ((True, GRAD_SAMPLES + MORE_GRAD_SAMPLES), (False, (13, 28))):
        for i in chosen:
            cons, args, _ = samples[i]
            _, m = _module_pair(cons, torch.float64, training)
            assert _gradcheck_module(m, args, torch.autograd.gradcheck), (cons, training)


# Ported from pytorch test/test_modules.py::TestModule.test_gradgrad (nn.LSTM inputs,
# float64), on 4 of the 32 inputs (GRAD_SAMPLES) to keep the file fast.
def test_module_gradgrad():
    samples = lstm_module_inputs(torch.float64, requires_grad=True)
    for i in GRAD_SAMPLES:
        cons, args, _ = samples[i]
        _, m = _module_pair(cons, torch.float64, True)
        assert _gradcheck_module(m, args, torch.autograd.gradgradcheck), cons


# Ported from pytorch test/test_modules.py::TestModule.test_memory_format (nn.LSTM
# inputs; 2-D inputs, so only the contiguous and preserve formats apply): outputs and
# gradients are unchanged and contiguous after module.to(memory_format=...).
def test_module_memory_format():
    dtype = torch.float32
    for cons, args, _ in lstm_module_inputs(dtype, requires_grad=True):
        _, m = _module_pair(cons, dtype, True)
        desired = m(*args)
        flat_out = torch.utils._pytree.tree_flatten(desired)[0]
        diff_inputs = torch.utils._pytree.tree_flatten(args)[0] + list(m.parameters())
        ref_grad_outputs = [torch.rand_like(t) for t in flat_out]
        ref_grads = torch.autograd.grad(flat_out, diff_inputs, ref_grad_outputs)
        for module_mem_format in (torch.preserve_format, torch.contiguous_format):
            m.to(memory_format=module_mem_format)
            outputs = m(*args)
            torch.testing.assert_close(outputs, desired)
            flat = torch.utils._pytree.tree_flatten(outputs)[0]
            assert all(t.is_contiguous() for t in flat)
            diff_inputs = torch.utils._pytree.tree_flatten(args)[0] + list(m.parameters())
            grads = torch.autograd.grad(flat, diff_inputs, ref_grad_outputs)
            torch.testing.assert_close(grads, ref_grads)
            assert all(g.is_contiguous() for g in grads)


# Ported from pytorch test/test_modules.py::TestModule.test_if_train_and_eval_modes_differ
# (nn.LSTM's entry has train_and_eval_differ=True): without `training` the forward
# either runs or fails with an AttributeError naming 'training'.
def test_module_if_train_and_eval_modes_differ():
    for cons, args, _ in lstm_module_inputs(torch.float32):
        m = FusedLSTM(**cons)
        delattr(m, "training")
        try:
            m(*args)
        except AttributeError as e:
            assert "'training'" in str(e)


# Ported from pytorch test/test_modules.py::TestModule.test_device_ctx_init (nn.LSTM
# inputs): built under torch.device('meta'), the parameters are meta tensors with the
# CPU module's metadata.
def test_module_device_ctx_init():
    for cons, _, _ in lstm_module_inputs(torch.float32):
        m_cpu = FusedLSTM(**cons)
        with torch.device("meta"):
            m = FusedLSTM(**cons)
        params = list(m.parameters())
        assert len(params) == len(list(m_cpu.parameters()))
        for p_meta, p_cpu in zip(params, m_cpu.parameters()):
            assert p_meta.is_meta
            assert (p_meta.shape, p_meta.dtype, p_meta.stride(), p_meta.requires_grad) == \
                (p_cpu.shape, p_cpu.dtype, p_cpu.stride(), p_cpu.requires_grad)


# Ported from pytorch test/test_modules.py::TestModule.test_errors with
# common_modules.py::module_error_inputs_torch_nn_RNN_GRU (nn.LSTM's error inputs)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_errors(dtype):
    mismatched_dtype = torch.float64 if dtype == torch.float32 else torch.float32
    construction_errors = [
        ((10, 0, 1), {}, ValueError, "hidden_size must be greater than zero"),
        ((10, 10, 0), {}, ValueError, "num_layers must be greater than zero"),
        ((3, 5), dict(bias=0), TypeError, "bias should be of type bool, got: int"),
        ((3, 5), dict(bias=1), TypeError, "bias should be of type bool, got: int"),
        ((3, 5), dict(bias="True"), TypeError, "bias should be of type bool, got: str"),
        ((3, 5), dict(batch_first=0), TypeError, "batch_first should be of type bool, got: int"),
        ((3, 5), dict(batch_first=1), TypeError, "batch_first should be of type bool, got: int"),
        ((3, 5), dict(batch_first="False"), TypeError,
         "batch_first should be of type bool, got: str"),
        ((3.0, 5), {}, TypeError, "input_size should be of type int, got: float"),
        (("10", 5), {}, TypeError, "input_size should be of type int, got: str"),
        ((0, 5), {}, ValueError, "input_size must be greater than zero"),
        ((-1, 5), {}, ValueError, "input_size must be greater than zero"),
        ((3, 5.0), {}, TypeError, "hidden_size should be of type int, got: float"),
    ]
    for args, kwargs, error_type, error_regex in construction_errors:
        _raises_like_nn_lstm(error_type, lambda: nn.LSTM(*args, **kwargs),
                             lambda: FusedLSTM(*args, **kwargs), match=error_regex)

    # forward error: dtype mismatch
    x = make_tensor((2, 4, 3), dtype=mismatched_dtype, device="cpu")
    _raises_like_nn_lstm(
        ValueError, lambda: nn.LSTM(3, 5, dtype=dtype)(x), lambda: FusedLSTM(3, 5, dtype=dtype)(x),
        match=(r"RNN input dtype .* does not match weight dtype .* "
               r"Convert input: input\.to\(.*\), or convert model: model\.to\(.*\)"))


# Ported from pytorch test/test_modules.py::TestModule.test_cpu_gpu_parity and
# test_multiple_device_transfer (nn.LSTM inputs): FusedLSTM on CUDA against nn.LSTM
# on the CPU, forward and backward, and the module moved CUDA -> CPU -> CUDA.
@requires_cuda
def test_module_cpu_gpu_parity(no_tf32):
    dtype = torch.float64
    for cons, args, _ in lstm_module_inputs(dtype, requires_grad=True):
        ref, m = _module_pair(cons, dtype, True)
        m = m.cuda()
        gpu_args = _traverse(args, lambda t: t.detach().cuda().requires_grad_(t.requires_grad))
        cpu_out, gpu_out = ref(*args), m(*gpu_args)
        assert_match(gpu_out, cpu_out)
        flat_cpu = torch.utils._pytree.tree_flatten(cpu_out)[0]
        flat_gpu = torch.utils._pytree.tree_flatten(gpu_out)[0]
        grads = [torch.randn_like(t) for t in flat_cpu]
        torch.autograd.backward(flat_cpu, grads)
        torch.autograd.backward(flat_gpu, [g.cuda() for g in grads])
        assert_match([t.grad for t in torch.utils._pytree.tree_flatten(gpu_args)[0]],
                     [t.grad for t in torch.utils._pytree.tree_flatten(args)[0]])
        assert_match([p.grad for p in m.parameters()], [p.grad for p in ref.parameters()])
        # multiple device transfer
        m.cpu()
        assert_match(m(*args), cpu_out)
        m.cuda()
        assert_match(m(*gpu_args), cpu_out)
        assert all(p.is_cuda for p in m.parameters())
