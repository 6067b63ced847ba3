"""nn.LSTM and FusedLSTM on one config: the two modules with the same weights and input, one
inference or training step of each, and how far FusedLSTM's results sit from nn.LSTM's."""

import dataclasses
from typing import Callable, Optional

import torch
from torch import nn

from .. import FusedLSTM
from .configs import IMPLS, MODES, Config


@dataclasses.dataclass
class Case:
    """nn.LSTM and FusedLSTM with the same weights, one input, fixed output gradients."""

    cfg: Config
    device: torch.device
    ref: nn.LSTM
    fused: FusedLSTM
    x: torch.Tensor
    grads: tuple  # gradients for (output, h_n, c_n): the weights of the summed loss

    def module(self, impl: str) -> nn.Module:
        return self.ref if impl == "nn.LSTM" else self.fused


def build(cfg: Config, device, seed: int = 0) -> Case:
    """Both modules on `device` in cfg.dtype, with the same weights and input."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = nn.LSTM(cfg.I, cfg.H, num_layers=cfg.num_layers,
                      bidirectional=cfg.bidirectional, proj_size=cfg.proj_size)
    ref = ref.to(device=device, dtype=cfg.dtype)
    fused = FusedLSTM.from_lstm(ref)
    dirs = 2 if cfg.bidirectional else 1
    hout = cfg.proj_size or cfg.H

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=cfg.dtype)

    x = randn(cfg.T, cfg.B, cfg.I).requires_grad_()
    grads = (randn(cfg.T, cfg.B, dirs * hout), randn(cfg.num_layers * dirs, cfg.B, hout),
             randn(cfg.num_layers * dirs, cfg.B, cfg.H))
    return Case(cfg, device, ref, fused, x, grads)


def make_step(case: Case, impl: str, mode: str) -> Callable[[], None]:
    """A no-argument callable running one inference or training step of `impl`."""
    module, x, grads = case.module(impl), case.x, case.grads
    params = list(module.parameters())

    if mode == "inference":
        def step():
            with torch.no_grad():
                module(x)
    elif mode == "training":
        def step():
            for p in params:
                p.grad = None
            x.grad = None
            y, (h_n, c_n) = module(x)
            torch.autograd.backward((y, h_n, c_n), grads)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return step


def _largest_rel_diff(pairs) -> float:
    """Over (FusedLSTM's, nn.LSTM's) tensor pairs: the largest |a - b| relative to b's largest
    magnitude, in float64 (float32 would read float64 differences below its resolution as 0)."""
    err = 0.0
    for a, b in pairs:
        scale = b.abs().max().double().clamp_min(1e-300)
        err = max(err, ((a.double() - b.double()).abs().max() / scale).item())
    return err


def max_rel_diff(case: Case) -> float:
    """Largest |FusedLSTM - nn.LSTM| over output, h_n, c_n, relative to nn.LSTM's max."""
    with torch.no_grad():
        y_r, (h_r, c_r) = case.ref(case.x)
        y_f, (h_f, c_f) = case.fused(case.x)
    return _largest_rel_diff(((y_f, y_r), (h_f, h_r), (c_f, c_r)))


def max_grad_rel_diff(case: Case) -> float:
    """Largest |FusedLSTM - nn.LSTM| over the gradients of one training step (input and
    every parameter), each relative to nn.LSTM's largest value of that gradient."""
    grads = {}
    for impl in IMPLS:
        module = case.module(impl)
        params = list(module.parameters())
        x = case.x.detach().requires_grad_()
        y, (h_n, c_n) = module(x)
        grads[impl] = torch.autograd.grad((y, h_n, c_n), [x, *params], case.grads)
    return _largest_rel_diff(zip(grads["FusedLSTM"], grads["nn.LSTM"]))


def agreement_tolerance(dtype: torch.dtype, device) -> float:
    """How far FusedLSTM's outputs and gradients may sit from nn.LSTM's (relative to the
    largest value) before the benchmark reports the two as disagreeing: a few hundred
    roundings of the dtype, for the whole sequence (TF32 counts as 16-bit)."""
    if dtype == torch.float64:
        return 1e-8
    tf32 = torch.device(device).type == "cuda" and (torch.backends.cuda.matmul.allow_tf32
                                                    or torch.backends.cudnn.allow_tf32)
    if dtype == torch.float32 and not tf32:
        return 1e-3
    return 5e-2


def disagreement(result: dict) -> Optional[str]:
    """What of FusedLSTM's results is beyond the tolerance against nn.LSTM's, or None."""
    tol = result.get("tolerance")
    if tol is None:
        return None
    bad = [f"{what} {result[key]:.3g}" for what, key in
           (("outputs", "max_rel_diff"), ("gradients", "max_grad_rel_diff"))
           if key in result and not result[key] <= tol]  # NaN counts as beyond
    return (", ".join(bad) + f" > {tol:g}") if bad else None
