"""FusedLSTM against nn.LSTM: time, throughput and peak memory on the same weights.

    python -m fused_lstm.bench                     # every config for the device, both modes
    python -m fused_lstm.bench --quick             # cheaper subset, a minute or so on a laptop CPU
    python -m fused_lstm.bench --device cpu --configs fastrnns,sentiment --modes training \\
        --reps 20 --warmup 3 --threads 4 --out bench_results

Both implementations run in one process, on the same weights (``FusedLSTM.from_lstm``)
and the same inputs. After ``--warmup`` untimed rounds, ``--reps`` timed repetitions
alternate between the two (A B, then B A, ...) so that drift in clock speed or in the
load of other processes hits both alike. Reported per config and mode:

* time: median, with the interquartile range (q1-q3) and min/max as spread in the JSON.
  CPU: ``time.perf_counter``. CUDA: CUDA events recorded around the call, after a
  device synchronize, so the time includes any host-side launch gaps.
* ratio = nn.LSTM median time / FusedLSTM median time (above 1: FusedLSTM is faster).
  The summary is the geometric mean of the ratios per mode.
* GFLOP/s = FLOPs / median time, with the FLOPs of :func:`lstm_flops`.
* peak memory of one training step (see :func:`peak_step_memory`).
* agreement: the largest difference from nn.LSTM's output, h_n and c_n, and (when
  training is timed) from its gradients of one training step, relative to the largest
  value. Beyond :func:`agreement_tolerance` a config is reported as differing, and
  the command exits with status 1 after writing its report.

Modes: ``inference`` is a forward under ``torch.no_grad()``; ``training`` is a forward
and a backward of a fixed random-weighted sum of output, h_n and c_n (run as
``torch.autograd.backward((y, h_n, c_n), (g_y, g_h, g_c))`` with fixed random ``g``,
which is that sum's gradient without timing the extra multiplies), with gradients into
every parameter and into the input; gradients are reset to None before each step.

On CUDA the default configs add a bfloat16 twin of every float32 shape (``<name>-bf16``),
and ``--tf32`` sets whether float32 GEMMs may use TF32 tensor cores, for both
implementations alike (default ``off``: full float32 on both sides; PyTorch's own
defaults differ, cuDNN allowing TF32 and matmul not).

``--out DIR`` writes ``results-<device name>-<date>.json`` (all numbers, every
repetition, machine info and the exact command line), ``.md`` (the table) and, when
matplotlib can be imported, ``.png`` (a bar chart of the ratios). The device name is
the GPU name on CUDA, and on CPU the CPU model with the vector ISA the kernels ran
(``AVX512+AMX``, ``AVX512+AVX512_BF16``, ``AVX2``, ...; ``(capped)`` when ``ATEN_CPU_CAPABILITY`` or
``ONEDNN_MAX_CPU_ISA`` lowered it); runs with ``--tf32 on`` add ``-tf32``.
"""

# The package's modules, one job each: configs (shapes, modes, FLOP model), cases (the two
# modules on one config, their steps, agreement), timing, memory, run (one config measured),
# report (machine info and the .md/.json/.png writers), cli (arguments and main);
# __main__ runs `python -m fused_lstm.bench`. The names below keep `fused_lstm.bench.<name>`
# working for the code that imports them.

from .configs import (CONFIGS, IMPLS, MODES, QUICK, Config, default_configs, dtype_name,
                      lstm_flops)
from .cases import (Case, agreement_tolerance, build, disagreement, make_step,
                    max_grad_rel_diff, max_rel_diff)
from .timing import summarize, synchronize, time_interleaved
from .memory import MEMORY_NOTE, peak_step_memory
from .run import run_config
from .report import (_slug, cpu_isa, cpu_isa_label, cpu_model, disagreement_lines,
                     geomean_ratios, machine_info, markdown_report, markdown_table,
                     summary_line, write_outputs)
from .cli import main, parse_args

__all__ = ["CONFIGS", "IMPLS", "MODES", "QUICK", "Config", "default_configs", "dtype_name",
           "lstm_flops", "Case", "agreement_tolerance", "build", "disagreement", "make_step",
           "max_grad_rel_diff", "max_rel_diff", "summarize", "synchronize", "time_interleaved",
           "MEMORY_NOTE", "peak_step_memory", "run_config", "cpu_isa", "cpu_isa_label",
           "cpu_model", "disagreement_lines", "geomean_ratios", "machine_info",
           "markdown_report", "markdown_table", "summary_line", "write_outputs", "main",
           "parse_args"]
