// fused_lstm::segment_pad (schema in ops.cpp): packed rows [N, C] into a padded
// [steps, batch, C], zero where no packed row lands; the output of `lengths=` and
// `reset=` calls (fused_lstm/segments.py). The CPU kernel writes each padded row once, a
// copy or zeros; other devices zero the output, then copy the rows in.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

namespace fused_lstm {

namespace {

// rows: [N] int64, the padded row (t * batch + b) of each packed row, distinct.
void check_pad_args(const at::Tensor& packed, const at::Tensor& rows, int64_t steps,
                    int64_t batch) {
  TORCH_CHECK(packed.dim() == 2, "segment_pad: expected packed rows [N, C], got ",
              packed.sizes());
  TORCH_CHECK(rows.dim() == 1 && rows.scalar_type() == at::kLong &&
                  rows.size(0) == packed.size(0),
              "segment_pad: expected rows [", packed.size(0), "] of dtype int64, got ",
              rows.sizes(), " of dtype ", rows.scalar_type());
  TORCH_CHECK(rows.device() == packed.device(), "segment_pad: expected rows on ",
              packed.device(), " (the packed rows' device), got ", rows.device());
  TORCH_CHECK(steps >= 0 && batch >= 0, "segment_pad: expected steps and batch >= 0, got ",
              steps, " and ", batch);
}

at::Tensor segment_pad_any_device(const at::Tensor& packed, const at::Tensor& rows,
                                  int64_t steps, int64_t batch) {
  check_pad_args(packed, rows, steps, batch);
  return packed.new_zeros({steps * batch, packed.size(1)})
      .index_copy_(0, rows, packed)
      .view({steps, batch, packed.size(1)});
}

// Padded row r takes packed row source[r], or zeros where source[r] < 0.
void copy_or_zero_rows(const char* packed, const int64_t* source, int64_t r0, int64_t r1,
                       int64_t row_bytes, char* out) {
  for (int64_t r = r0; r < r1; ++r) {
    char* dst = out + r * row_bytes;
    if (source[r] >= 0) {
      std::memcpy(dst, packed + source[r] * row_bytes, row_bytes);
    } else {
      std::memset(dst, 0, row_bytes);
    }
  }
}

at::Tensor segment_pad_cpu(const at::Tensor& packed_in, const at::Tensor& rows_in,
                           int64_t steps, int64_t batch) {
  check_pad_args(packed_in, rows_in, steps, batch);
  const at::Tensor packed = packed_in.contiguous();
  const at::Tensor rows = rows_in.contiguous();
  const int64_t padded_rows = steps * batch, n = rows.size(0);
  std::vector<int64_t> source(padded_rows, -1);  // [steps * batch] packed row or -1
  const int64_t* row = rows.data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    TORCH_CHECK_INDEX(row[k] >= 0 && row[k] < padded_rows, "segment_pad: row ", row[k],
                      " of packed row ", k, " is outside the padded rows [0, ", padded_rows,
                      ")");
    source[row[k]] = k;
  }
  at::Tensor out = at::empty({steps, batch, packed.size(1)}, packed.options());
  const int64_t row_bytes = packed.size(1) * packed.element_size();
  const char* src = static_cast<const char*>(packed.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  // A grain of about 64 KiB per task: the copy is bound by memory (and first touches).
  const int64_t grain = std::max<int64_t>(1, (int64_t(64) << 10) / std::max<int64_t>(1, row_bytes));
  at::parallel_for(0, padded_rows, grain, [&](int64_t r0, int64_t r1) {
    copy_or_zero_rows(src, source.data(), r0, r1, row_bytes, dst);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CompositeExplicitAutograd, m) {
  m.impl("segment_pad", &segment_pad_any_device);
}

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("segment_pad", &segment_pad_cpu);
}

}  // namespace fused_lstm
