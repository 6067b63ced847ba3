// The binding of fused_lstm::segment_layout (schema in ops.cpp): checks the values of the
// lengths and the reset mask, then the maps of segment_maps.h as tensors. The values are
// read on the host whatever their device, so one kernel serves every device.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <sstream>
#include <string>
#include <tuple>

#include "segment_maps.h"

namespace fused_lstm {

namespace {

// "torch.float32" for a ScalarType, as Python names dtypes in the module's own messages.
std::string python_dtype(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

// lengths: [batch] integers -> [batch] int64 on the CPU, each checked to lie in [0, steps].
at::Tensor checked_ends(const std::optional<at::Tensor>& lengths, int64_t steps,
                        int64_t batch) {
  if (!lengths.has_value()) return at::full({batch}, steps, at::kLong);
  TORCH_CHECK_TYPE(at::isIntegralType(lengths->scalar_type(), /*includeBool=*/false),
                   "lengths must be an integer tensor, got dtype ",
                   python_dtype(lengths->scalar_type()));
  TORCH_CHECK_VALUE(lengths->dim() == 1 && lengths->size(0) == batch,
                    "lengths must hold one length per sequence: expected shape (", batch,
                    ",), got ", lengths->sizes());
  at::Tensor ends = lengths->to(at::kCPU, at::kLong).contiguous();
  const int64_t* v = ends.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK_VALUE(v[b] >= 0, "lengths must be >= 0, got ", v[b], " for sequence ", b);
    TORCH_CHECK_VALUE(v[b] <= steps, "lengths must be at most the input's sequence length ",
                      steps, ", got ", v[b], " for sequence ", b);
  }
  return ends;
}

// reset: [steps, batch], bool or numbers 0 and 1 -> bool on the CPU, contiguous.
at::Tensor checked_mask(const at::Tensor& reset, int64_t steps, int64_t batch) {
  TORCH_CHECK_TYPE(!at::isComplexType(reset.scalar_type()),
                   "reset must be a bool tensor or hold numbers 0 and 1, got dtype ",
                   python_dtype(reset.scalar_type()));
  TORCH_CHECK_VALUE(reset.dim() == 2 && reset.size(0) == steps && reset.size(1) == batch,
                    "reset must be (T, B): expected shape (", steps, ", ", batch, "), got ",
                    reset.sizes());
  at::Tensor mask = reset.to(at::kCPU);
  if (mask.scalar_type() != at::kBool) {
    const at::Tensor bad = mask.index({mask.ne(0).logical_and(mask.ne(1))});
    if (bad.numel() > 0) {
      const at::Tensor values = std::get<0>(at::_unique(bad, /*sorted=*/true));
      std::ostringstream shown;
      for (int64_t k = 0; k < std::min<int64_t>(values.numel(), 4); ++k) {
        const double value = values[k].item<double>();
        shown << (k ? ", " : "") << value;
        if (values.is_floating_point() && value == static_cast<int64_t>(value)) shown << ".0";
      }
      TORCH_CHECK_VALUE(false, "reset must be a bool tensor or hold only 0 and 1, got values [",
                        shown.str(), "]");
    }
    mask = mask.ne(0);
  }
  return mask.contiguous();
}

at::Tensor index_tensor(const std::vector<int64_t>& values, c10::Device device) {
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kLong);
  std::copy(values.begin(), values.end(), t.data_ptr<int64_t>());
  return device.is_cpu() ? t : t.to(device);
}

// Returns batch_sizes [T'] on the CPU, rows [N], initial [B'] and final [B] on `device`.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_layout(
    const std::optional<at::Tensor>& lengths, const std::optional<at::Tensor>& reset,
    int64_t steps, int64_t batch, c10::Device device) {
  const at::Tensor ends = checked_ends(lengths, steps, batch);
  const std::optional<at::Tensor> mask =
      reset.has_value() ? std::optional<at::Tensor>(checked_mask(*reset, steps, batch))
                        : std::nullopt;
  const SegmentMaps maps = segment_maps(ends.data_ptr<int64_t>(),
                                        mask.has_value() ? mask->data_ptr<bool>() : nullptr,
                                        steps, batch);
  return {index_tensor(maps.batch_sizes, c10::Device(c10::kCPU)),
          index_tensor(maps.rows, device), index_tensor(maps.initial, device),
          index_tensor(maps.final_index, device)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CompositeExplicitAutograd, m) {
  m.impl("segment_layout", &segment_layout);
}

}  // namespace fused_lstm
