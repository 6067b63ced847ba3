#include "cpu_tuning.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace fused_lstm::cpu {

namespace {

std::string env_upper(const char* name) {
  const char* v = std::getenv(name);
  std::string s = v ? v : "";
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::toupper(ch); });
  return s;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// A count from 0 to 2^20 in the environment variable `name`, or -1 where it is unset or
// anything else (with a warning: a switch that is not understood changes nothing).
int64_t env_count(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || n < 0 || n > (1 << 20)) {
    TORCH_WARN("fused_lstm: ", name, " must be a whole number from 0 to ", 1 << 20, ", got '", v,
               "'; ignored");
    return -1;
  }
  return n;
}

// ATen's verdict: the CPU's level, capped by ATEN_CPU_CAPABILITY.
VectorIsa aten_isa() {
  const std::string cap = at::get_cpu_capability();
  if (cap == "AVX512") return VectorIsa::kAvx512;
  if (cap == "AVX2") return VectorIsa::kAvx2;
  return VectorIsa::kBaseline;
}

struct OnednnCap {
  VectorIsa isa;
  bool bf16;  // AVX512_CORE_BF16 or above
  bool amx;   // an AMX level (AVX512_CORE_AMX, AVX10_x_512_AMX...)
};

// What ONEDNN_MAX_CPU_ISA (or its older name DNNL_MAX_CPU_ISA) allows; no cap when unset.
OnednnCap onednn_cap() {
  std::string v = env_upper("ONEDNN_MAX_CPU_ISA");
  if (v.empty()) v = env_upper("DNNL_MAX_CPU_ISA");
  if (v.empty() || v == "ALL" || v == "DEFAULT") return {VectorIsa::kAvx512, true, true};
  const bool amx = v.find("AMX") != std::string::npos;
  if (starts_with(v, "AVX10")) return {VectorIsa::kAvx512, true, amx};
  if (starts_with(v, "AVX512")) {
    return {VectorIsa::kAvx512, v != "AVX512_CORE" && v != "AVX512_CORE_VNNI", amx};
  }
  if (starts_with(v, "AVX2")) return {VectorIsa::kAvx2, false, false};
  return {VectorIsa::kBaseline, false, false};  // SSE41, AVX
}

struct CpuidFlags {
  bool avx512_bf16 = false;
  bool amx_tile = false;
};

CpuidFlags cpuid_flags() {
  CpuidFlags f;
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) f.amx_tile = (d >> 24) & 1;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = (a >> 5) & 1;
#endif
  return f;
}

Tuning choose() {
  Tuning k;
  const OnednnCap cap = onednn_cap();
  const CpuidFlags cpu = cpuid_flags();
  k.isa = std::min(aten_isa(), cap.isa);
  k.cpu_has_avx512_bf16 = cpu.avx512_bf16;
  k.cpu_has_amx = cpu.amx_tile;
  const bool blas = env_upper("FUSED_LSTM_CPU_GEMM") == "BLAS";
  const bool bf16_off = env_upper("FUSED_LSTM_CPU_BF16") == "0";
  // The microkernel is JIT-built for AVX2 and AVX-512; below that it would take a slow
  // generic path, so the BLAS serves instead.
  k.f32_gemm = blas || k.isa == VectorIsa::kBaseline ? GemmKernel::kBlas : GemmKernel::kBrgemm;
  // float64: the BLAS (MKL) takes a slow path on AMD CPUs; our tiles are faster there.
  k.f64_gemm = blas                            ? GemmKernel::kBlas
               : k.isa == VectorIsa::kAvx512 ? GemmKernel::kOwnAvx512
               : k.isa == VectorIsa::kAvx2   ? GemmKernel::kOwnAvx2
                                             : GemmKernel::kBlas;
  k.bf16_gemm = k.isa == VectorIsa::kAvx512 && cap.bf16 && cpu.avx512_bf16 && !bf16_off;
  // AMX: several times the vdpbf16ps rate (benchmarks/NOTES.md, "bfloat16 on AMX tiles").
  k.bf16_amx = k.bf16_gemm && cap.amx && cpu.amx_tile && env_upper("FUSED_LSTM_CPU_AMX") != "0";
  k.step_unit_chunk = env_count("FUSED_LSTM_CPU_UNIT_STEP");
  return k;
}

const char* isa_name(VectorIsa isa) {
  switch (isa) {
    case VectorIsa::kAvx512: return "AVX512";
    case VectorIsa::kAvx2: return "AVX2";
    default: return "baseline (no vector ISA)";
  }
}

const char* gemm_name(GemmKernel g) {
  switch (g) {
    case GemmKernel::kBrgemm: return "oneDNN BRGEMM";
    case GemmKernel::kOwnAvx512: return "own AVX-512 tiles";
    case GemmKernel::kOwnAvx2: return "own AVX2 tiles";
    default: return "BLAS";
  }
}

}  // namespace

const Tuning& tuning() {
  static const Tuning t = choose();
  return t;
}

std::string describe_cpu_kernels() {
  const Tuning& k = tuning();
  std::string s = std::string(isa_name(k.isa)) + "; float32 GEMMs: " + gemm_name(k.f32_gemm) +
                  "; float64 GEMMs: " + gemm_name(k.f64_gemm) + "; bfloat16 GEMMs: " +
                  (k.bf16_amx    ? "oneDNN BRGEMM on AMX tiles (one-row and odd-K products: own AVX512_BF16 tiles)"
                   : k.bf16_gemm ? "own AVX512_BF16 tiles"
                                 : "in float32");
  s += std::string("; CPU has AVX512_BF16: ") + (k.cpu_has_avx512_bf16 ? "yes" : "no") +
       ", AMX: " + (k.cpu_has_amx ? "yes" : "no");
  return s;
}

}  // namespace fused_lstm::cpu
