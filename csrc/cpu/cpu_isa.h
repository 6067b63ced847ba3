// Which instruction sets and GEMM kernels the CPU kernels use, decided once per process,
// in this one place.
//
// The vector ISA is the lowest of:
//   - ATen's own choice (at::get_cpu_capability(): what the CPU supports, capped by the
//     ATEN_CPU_CAPABILITY environment variable, e.g. `avx2` or `default`);
//   - oneDNN's cap, ONEDNN_MAX_CPU_ISA (e.g. `AVX2`, `AVX512_CORE`), which oneDNN applies to
//     nn.LSTM and to the BRGEMM microkernel our float32 GEMMs call.
// So the two environment variables run the whole process (nn.LSTM, ATen and these kernels)
// as on a CPU of that level: an AVX-512 machine runs the test suite as an AVX2-only one.
//
// Two switches pick a kernel family for comparison:
//   FUSED_LSTM_CPU_GEMM=blas  every float32 and float64 GEMM through the BLAS libtorch links;
//   FUSED_LSTM_CPU_BF16=0     bfloat16 layers in float32 instead of on AVX512_BF16.
#pragma once

#include <string>

namespace fused_lstm::cpu {

enum class VectorIsa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

enum class GemmKernel {
  kBrgemm,      // oneDNN's BRGEMM microkernel, exported by libtorch (float32)
  kOwnAvx512,   // our register tiles (gemm_kernels.h)
  kOwnAvx2,
  kBlas,        // the BLAS libtorch links (MKL's sgemm_/dgemm_)
};

struct CpuKernelChoice {
  VectorIsa isa;            // the vector kernels' instruction set (see above)
  GemmKernel f32_gemm;      // float32 GEMMs (one-row GEMMs always run our GEMV)
  GemmKernel f64_gemm;      // float64 GEMMs
  bool bf16_gemm;           // bfloat16 GEMMs multiply bfloat16 operands on vdpbf16ps (ISA
                            // AVX-512 with AVX512_BF16 allowed); otherwise bfloat16 layers
                            // run in float32
  bool cpu_has_avx512_bf16; // what the CPU itself offers, whatever the caps say
  bool cpu_has_amx;         // AMX tiles (reported; no kernel uses them)
};

const CpuKernelChoice& cpu_kernel_choice();

// One line for people: the ISA and the kernel behind each dtype's GEMMs.
std::string describe_cpu_kernels();

}  // namespace fused_lstm::cpu
