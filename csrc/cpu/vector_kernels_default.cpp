// Pointwise kernels built for the baseline instruction set of the compiler.
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "vector_kernels_impl.h"

FUSED_LSTM_DEFINE_VARIANT(DEFAULT)
