"""What the benchmark runs: the implementations, the modes, the shapes (Config, CONFIGS, the
default and --quick lists) and the FLOP model that turns a time into GFLOP/s."""

import dataclasses
from typing import Dict, List

import torch

IMPLS = ("nn.LSTM", "FusedLSTM")
MODES = ("inference", "training")


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmark shape. Input is [T, B, I] (sequence first)."""

    name: str
    T: int
    B: int
    I: int  # noqa: E741
    H: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    dtype: torch.dtype = torch.float32
    cuda_only: bool = False  # left out of the default list on CPU
    hidden: bool = False  # never in a default list; only run when named (tests)

    def describe(self) -> str:
        s = f"T={self.T} B={self.B} I={self.I} H={self.H}"
        if self.num_layers != 1:
            s += f" L={self.num_layers}"
        if self.bidirectional:
            s += " bidir"
        if self.proj_size:
            s += f" proj={self.proj_size}"
        if self.dtype != torch.float32:
            s += f" {dtype_name(self.dtype)}"
        return s

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dtype"] = dtype_name(self.dtype)
        return d


CONFIGS: Dict[str, Config] = {c.name: c for c in [
    Config("fastrnns", T=100, B=64, I=512, H=512),  # PyTorch's fastrnns benchmark shape
    Config("digits-rows", T=28, B=64, I=28, H=64),  # 28x28 images read row by row
    Config("sentiment", T=50, B=30, I=100, H=256, num_layers=2, bidirectional=True),
    Config("latency-b1", T=50, B=1, I=128, H=128),
    Config("long-seq", T=500, B=16, I=64, H=128),
    Config("float64", T=50, B=32, I=128, H=128, dtype=torch.float64),
    Config("bfloat16", T=50, B=32, I=256, H=256, dtype=torch.bfloat16),
    Config("b1", T=100, B=1, I=512, H=512, cuda_only=True),
    Config("b8", T=100, B=8, I=512, H=512, cuda_only=True),
    Config("big", T=100, B=256, I=1024, H=1024, cuda_only=True),
    Config("tiny", T=5, B=2, I=8, H=8, hidden=True),
]}
# On CUDA every float32 shape runs in bfloat16 too: cuDNN and FusedLSTM both have
# 16-bit paths there (bfloat16 weights and inputs, float32 accumulation).
CONFIGS.update({f"{c.name}-bf16": dataclasses.replace(c, name=f"{c.name}-bf16",
                                                      dtype=torch.bfloat16, cuda_only=True)
                for c in list(CONFIGS.values()) if c.dtype == torch.float32 and not c.hidden})
QUICK = {"cpu": ["digits-rows", "latency-b1", "sentiment", "float64", "bfloat16"],
         "cuda": ["digits-rows", "latency-b1", "sentiment", "float64", "bfloat16", "fastrnns",
                  "b8"]}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def default_configs(device: str) -> List[str]:
    return [n for n, c in CONFIGS.items()
            if not c.hidden and (device == "cuda" or not c.cuda_only)]


def lstm_flops(cfg: Config, mode: str = "inference") -> int:
    """Matrix-multiply FLOPs of one call (a multiply-add counts as 2).

    Per layer and direction, forward::

        2 * T * B * 4H * (I_layer + Hout)      input and recurrent projections of the gates
      + 2 * T * B * H * Hout                   output projection (only when proj_size > 0)

    with Hout = proj_size or H, I_layer = I for layer 0 and Hout * directions above it.
    The pointwise gate math is left out: some 10-20 FLOPs per gate element (activations,
    cell update) against 2 * (I_layer + Hout) for the GEMMs, a few percent at the
    smallest shapes here and less than 1% at I = H = 512. Training (forward + backward) counts 3x the forward:
    backward holds two GEMMs per forward GEMM (gradient of the input/hidden state and
    gradient of the weights).
    """
    dirs = 2 if cfg.bidirectional else 1
    hout = cfg.proj_size or cfg.H
    total = 0
    for layer in range(cfg.num_layers):
        i_layer = cfg.I if layer == 0 else hout * dirs
        per_dir = 2 * cfg.T * cfg.B * 4 * cfg.H * (i_layer + hout)
        if cfg.proj_size:
            per_dir += 2 * cfg.T * cfg.B * cfg.H * hout
        total += dirs * per_dir
    return 3 * total if mode == "training" else total
