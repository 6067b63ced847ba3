// Device checks of the CUDA bindings (lstm_cuda.cpp, lstm_variant_cuda.cpp): every tensor
// argument on one CUDA device, batch_sizes on the CPU.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

namespace fused_lstm::cuda {

struct Named {
  const char* name;
  const at::Tensor* t;  // null: an absent optional argument
};

// The tensor of an optional argument, or null.
inline const at::Tensor* opt_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? &*t : nullptr;
}

// All tensor arguments must sit on one CUDA device. The dispatcher routes a call
// here as soon as any argument is on CUDA, so a CPU tensor in the mix lands
// here too and is reported by name.
void check_same_cuda_device(const char* op, const std::vector<Named>& tensors);

// The device check of every tensor argument, by name: `named`, then each of `lists` (a
// tensor list and the name its elements go by).
void check_on_one_cuda_device(
    const char* op, std::initializer_list<Named> named,
    std::initializer_list<std::pair<const std::vector<at::Tensor>*, const char*>> lists);

// batch_sizes stays on the CPU, where PackedSequence keeps it and the loops read it.
void check_batch_sizes_on_cpu(const char* op, const std::optional<at::Tensor>& batch_sizes);

}  // namespace fused_lstm::cuda
