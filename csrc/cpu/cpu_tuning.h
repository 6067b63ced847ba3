// Every threshold of the CPU routes and every environment switch, in one place (the
// shapes of the data layouts live with them: kGateChunk and kPanelWidth in gate_layout.h,
// the register tiles' kStepBlock in gemm_kernels_avx512.cpp / gemm_kernels_avx2.cpp).
//
// The constants are compile-time, each named as in benchmarks/NOTES.md ("CPU tuning
// constants"), where the measurements that set it are. The run-time part (instruction
// set, GEMM kernels) is read once per process by tuning().
//
// The vector ISA is the lowest of:
//   - ATen's own choice (at::get_cpu_capability(): what the CPU supports, capped by the
//     ATEN_CPU_CAPABILITY environment variable, e.g. `avx2` or `default`);
//   - oneDNN's cap, ONEDNN_MAX_CPU_ISA (e.g. `AVX2`, `AVX512_CORE`), which oneDNN applies to
//     nn.LSTM and to the BRGEMM microkernel our float32 GEMMs call.
// So the two environment variables run the whole process (nn.LSTM, ATen and these kernels)
// as on a CPU of that level: an AVX-512 machine runs the test suite as an AVX2-only one.
//
// Three switches pick a kernel family for comparison:
//   FUSED_LSTM_CPU_GEMM=blas  every float32 and float64 GEMM through the BLAS libtorch links;
//   FUSED_LSTM_CPU_BF16=0     bfloat16 layers in float32 instead of on AVX512_BF16;
//   FUSED_LSTM_CPU_AMX=0      bfloat16 GEMMs on our AVX512_BF16 tiles instead of AMX tiles.
// and one forces a route: FUSED_LSTM_CPU_UNIT_STEP=u  one-step calls split by hidden units in
// tasks of u units (at most H) whatever their rows and GEMM kernels (0: never split so).
//
// Which of these a call uses is decided from its sizes in cpu_plan.cpp.
#pragma once

#include <cstdint>
#include <string>

namespace fused_lstm::cpu {

enum class VectorIsa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

enum class GemmKernel {
  kBrgemm,     // oneDNN's BRGEMM microkernel, exported by libtorch (float32)
  kOwnAvx512,  // our register tiles (gemm_kernels.h)
  kOwnAvx2,
  kBlas,       // the BLAS libtorch links (MKL's sgemm_/dgemm_)
};

struct Tuning {
  // ---- run time, read once ----
  VectorIsa isa;            // the vector kernels' instruction set (see above)
  GemmKernel f32_gemm;      // float32 GEMMs (one-row GEMMs always run our GEMV)
  GemmKernel f64_gemm;      // float64 GEMMs
  bool bf16_gemm;           // bfloat16 GEMMs multiply bfloat16 operands on vdpbf16ps (ISA
                            // AVX-512 with AVX512_BF16 allowed); otherwise bfloat16 layers
                            // run in float32
  bool bf16_amx;            // with bf16_gemm: bfloat16 GEMMs run on oneDNN's BRGEMM
                            // microkernel with AMX tiles (CPU has AMX, ONEDNN_MAX_CPU_ISA
                            // allows it); one-row and odd-K products stay on our
                            // AVX512_BF16 tiles
  bool cpu_has_avx512_bf16; // what the CPU itself offers, whatever the caps say
  bool cpu_has_amx;         // AMX tiles
  int64_t step_unit_chunk;  // FUSED_LSTM_CPU_UNIT_STEP, or -1 (unset: cpu_plan.cpp decides)

  // ---- the layer's routes (cpu_plan.cpp) ----
  // Batch rows from which the input projection runs step by step inside the time loop
  // (a gate buffer one step long in inference); below, one GEMM over all steps first.
  static constexpr int64_t kMinRowsForStepInput = 16;
  // Multiply-adds per step from which a step is shared by the threads; below, one thread
  // runs the loop (waking and meeting a second one costs more than it takes over).
  static constexpr int64_t kMinParallelForwardStepMacs = 48 * 1024;
  static constexpr int64_t kMinParallelBackwardStepMacs = 512 * 1024;
  // The threads split the batch rows (each runs the whole loop on its rows, no barrier)
  // where w_hh^T is at most this big per core and each thread gets this many rows;
  // elsewhere they split the hidden units and meet at a barrier every step.
  static constexpr int64_t kMaxRowSplitWeightBytes = 512 * 1024;
  static constexpr int64_t kMinRowsPerThread = 8;
  // Backward route 1 (rows split, each thread its own weight gradients) while those
  // gradients, [I + Hout, 4H] in the accumulation type, stay below this (in L2).
  static constexpr int64_t kMaxOwnWeightGradientBytes = 512 * 1024;
  // Backward route 2 (the loop on one thread, the gradients of finished chunks on
  // another) from this many multiply-adds in the gradient GEMMs of a call, in chunks of
  // kOverlapChunkSteps steps' rows, at least kOverlapChunkRows.
  static constexpr int64_t kMinOverlapMacs = 1024 * 1024;
  static constexpr int64_t kOverlapChunkRows = 32;
  static constexpr int64_t kOverlapChunkSteps = 16;
  // Rows of d(gates) the backward keeps before turning them into gradients.
  static constexpr int64_t kBackwardBlockRows = 512;
  // Calls of at most this many steps run their GEMMs on the weights as they are, with no
  // blocked copy of them (float and double, no projection).
  static constexpr int64_t kMaxNaturalWeightSteps = 1;
  // Their pointwise passes are shared out to the threads by rows from this many cells
  // (rows x H) on.
  static constexpr int64_t kMinParallelStepCells = 4 * 1024;
  // Such a step with kMinRowsForUnitStep to kMaxRowsForUnitStep batch rows (from
  // kMinRowsForUnitStepLarge where the two weights take more than kLargeStepWeightBytes;
  // up to kMaxRowsForUnitStepAvx512 for float on AVX-512) is split by hidden units, in
  // tasks of kStepUnitChunk units, the GEMMs taking the weights as their A operand
  // (cpu_plan.cpp, step_unit_chunk).
  static constexpr int64_t kMinRowsForUnitStep = 12;
  static constexpr int64_t kMinRowsForUnitStepLarge = 4;
  static constexpr int64_t kMaxRowsForUnitStep = 32;
  static constexpr int64_t kMaxRowsForUnitStepAvx512 = 64;
  static constexpr int64_t kLargeStepWeightBytes = 4 << 20;
  static constexpr int64_t kStepUnitChunk = 64;

  // ---- GEMMs and copies ----
  // GEMMs below this many multiply-adds run on the calling thread.
  static constexpr int64_t kMinParallelGemmMacs = 1024 * 1024;
  // Cache blocking of one BRGEMM call.
  static constexpr int64_t kBrgemmK = 256;
  static constexpr int64_t kBrgemmN = 128;
  // TN GEMMs copy B into panels where its rows are this far apart or more (float32).
  static constexpr int64_t kMinPackedStrideBytes = 4096;
  // Rows of A per TN GEMM call: float32 (BRGEMM) and the other types (our tiles).
  static constexpr int64_t kTnPanelRowsFloat = 512;
  static constexpr int64_t kTnPanelRowsOther = 256;
  // bfloat16 on AMX tiles: the reduction is cut at kAmxMaxK, and the columns into blocks
  // of kAmxN, or kAmxWideN from kAmxWideRows rows of A on.
  static constexpr int64_t kAmxMaxK = 1024;
  static constexpr int64_t kAmxN = 128;
  static constexpr int64_t kAmxWideN = 512;
  static constexpr int64_t kAmxWideRows = 256;
  // Weight transposes shared out to the threads from this many elements.
  static constexpr int64_t kMinParallelTransposeElements = 32 * 1024;
};

const Tuning& tuning();

// One line for people: the ISA and the kernel behind each dtype's GEMMs.
std::string describe_cpu_kernels();

}  // namespace fused_lstm::cpu
