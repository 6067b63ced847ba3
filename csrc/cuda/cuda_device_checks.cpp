#include "cuda_device_checks.h"

namespace fused_lstm::cuda {

void check_same_cuda_device(const char* op, const std::vector<Named>& tensors) {
  const Named* first = nullptr;
  for (const Named& n : tensors) {
    if (n.t != nullptr && n.t->defined() && n.t->is_cuda()) {
      first = &n;
      break;
    }
  }
  TORCH_CHECK(first != nullptr, op, ": the CUDA kernel was called without a CUDA tensor");
  const c10::Device device = first->t->device();
  for (const Named& n : tensors) {
    if (n.t == nullptr || !n.t->defined()) continue;
    TORCH_CHECK(n.t->device() == device, op,
                ": expected all tensors on the same CUDA device, but ", first->name, " is on ",
                device, " and ", n.name, " is on ", n.t->device());
  }
}

void check_on_one_cuda_device(
    const char* op, std::initializer_list<Named> named,
    std::initializer_list<std::pair<const std::vector<at::Tensor>*, const char*>> lists) {
  std::vector<Named> all(named);
  for (const auto& [list, name] : lists) {
    for (const at::Tensor& t : *list) all.push_back({name, &t});
  }
  check_same_cuda_device(op, all);
}

void check_batch_sizes_on_cpu(const char* op, const std::optional<at::Tensor>& batch_sizes) {
  TORCH_CHECK(!batch_sizes.has_value() || batch_sizes->device().is_cpu(), op,
              ": expected batch_sizes on the CPU (where PackedSequence keeps it), got a tensor "
              "on ",
              batch_sizes->device());
}

}  // namespace fused_lstm::cuda
