// One kernel level's bodies, in the order they use each other (kernels/levels.hpp includes this
// file once per level, in the level's namespace and target region, with LOOM_LEVEL set). No
// include guard.

#include "loom/kernels/quant/activation.inl"
#include "loom/kernels/level/fused.inl"
#include "loom/kernels/level/attention_products.inl"
#include "loom/kernels/level/ops.inl"
#include "loom/kernels/level/gemm.inl"
#include "loom/kernels/quant/to_int8.inl"
#include "loom/kernels/level/gemm_int8.inl"
#include "loom/kernels/level/gemm_bf16.inl"
#include "loom/kernels/level/probe.inl"
#include "loom/kernels/level/type_kernels.inl"
#include "loom/kernels/level/table.inl"
