"""fused_lstm: a drop-in nn.LSTM whose layers run as fused C++/CUDA ops."""

from ._extension import extension_loaded
from .module import FusedLSTM, convert
from .reference import lstm_layer_reference
from . import quantization as _quantization

_quantization.register()

__version__ = "0.1.0"


def cuda_available() -> bool:
    """True when this build holds the CUDA kernels (a GPU may still be absent)."""
    import torch

    if not extension_loaded():
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("fused_lstm::lstm_layer_forward",
                                                          "CUDA")


__all__ = ["FusedLSTM", "convert", "cuda_available", "extension_loaded", "lstm_layer_reference",
           "__version__"]
