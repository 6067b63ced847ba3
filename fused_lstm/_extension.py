"""Loads the compiled kernels, or explains once why they are missing."""

import warnings

import torch  # noqa: F401  (loads libtorch, which _C links against)

_C = None
load_error = None

try:
    from fused_lstm import _C  # noqa: F401  (loading it registers torch.ops.fused_lstm.*)
except (ImportError, OSError) as e:  # missing, or built against another torch
    load_error = e
    warnings.warn(
        "fused_lstm: the compiled extension fused_lstm._C could not be loaded "
        f"({type(e).__name__}: {e}). FusedLSTM falls back to the slow plain-PyTorch reference "
        "implementation. Rebuild against the torch you have installed with "
        "`pip install --no-build-isolation .` (or `-e .`) from the fused_lstm source tree.",
        RuntimeWarning,
        stacklevel=2,
    )


def extension_loaded() -> bool:
    """True when the compiled kernels are in use (not the reference fallback)."""
    return _C is not None
