// The level-wide kernels of one kernel level (kernels/levels.hpp includes this file last in each
// level's namespace). No include guard.

inline constexpr LevelKernels level_table = {KernelLevel(LOOM_LEVEL),
                                             &dot_tiles_level<float>,
                                             &dot_tiles_level<f16>,
                                             &weighted_rows_add_level<float>,
                                             &weighted_rows_add_level<f16>,
                                             &f32_to_f16,
                                             &softmax_level,
                                             &silu_level,
                                             &gelu_tanh_level,
                                             &apply_level<gelu_erf>,
                                             &apply_level<relu>,
                                             &add_level,
                                             &gemm_f32,
#if LOOM_LEVEL == 0 && !LOOM_X86
                                             nullptr,
#else
                                             &gemm_half,
#endif
#if LOOM_LEVEL >= 1
                                             &quantize_int8_rows,
                                             &pack_int8_group,
                                             &gemm_int8,
#else
                                             nullptr,
                                             nullptr,
                                             nullptr,
#endif
#if LOOM_LEVEL == 2
                                             &rows_to_bf16,
                                             &gemm_bf16,
#else
                                             nullptr,
                                             nullptr,
#endif
                                             &sum_words_level,
                                             &peak_multiply_adds};
