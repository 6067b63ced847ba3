"""FusedLSTM under torch.ao.quantization.quantize_dynamic.

FusedLSTM has no quantized kernel of its own. Named in quantize_dynamic's spec
(``quantize_dynamic(model, {nn.Linear, FusedLSTM}, dtype=torch.qint8)``), it becomes
torch's dynamically quantized LSTM (``torch.ao.nn.quantized.dynamic.LSTM``, int8 or
float16 weights), built from the nn.LSTM FusedLSTM is equivalent to, exactly as an
nn.LSTM in that place would. quantize_dynamic's default spec names torch's module
types only, so without naming FusedLSTM it stays in float, as any module type missing
from the spec does.
"""

import torch.ao.nn.quantized.dynamic as nnqd
from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

from .module import FusedLSTM


class DynamicQuantizedLSTMFromFused:
    """quantize_dynamic's converter for FusedLSTM (the mapping's value for it)."""

    @classmethod
    def from_float(cls, mod: FusedLSTM, use_precomputed_fake_quant: bool = False):
        # shares the parameters; from_float only reads them. Not to_lstm, which refuses
        # weight_drop > 0: the quantized LSTM is inference only, where weight drop does nothing.
        lstm = mod._shared_lstm()
        lstm.qconfig = mod.qconfig
        return nnqd.LSTM.from_float(lstm, use_precomputed_fake_quant=use_precomputed_fake_quant)


def register() -> None:
    """Add FusedLSTM to the module mapping quantize_dynamic uses by default."""
    get_default_dynamic_quant_module_mappings().setdefault(FusedLSTM,
                                                           DynamicQuantizedLSTMFromFused)
