// loom-bench: llama-bench's table for loom, plus how close each result is to the machine's limit.
//
//   loom-bench (-m MODEL | --shape tinyllama-1.1b|gpt2-124m|llama2-7b-layer [--type T])
//              [-p 128] [-n 64] [-t 2] [-d 0] [-r 3] [--kv-type f32|f16] [--parallel 1,2,4,8,16] [-o md|json]
//   loom-bench --shape NAME [--type T] --save OUT.gguf [--vocab TOKENIZER]
//   T (the stored weight type of --shape's random model): f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1
//     iq4_nl iq4_xs q2_k q3_k q4_k q5_k q6_k, or llama.cpp's mixes q4_k_s q4_k_m q5_k_s q5_k_m
//
// pp<N>: a prompt of N tokens in one batched pass; tg<N>: N tokens decoded one at a time;
// "@ d<D>" (-d D, as llama-bench): both run after D tokens already in the KV cache, which
// holds f32 or, with --kv-type f16, f16 keys and values.
// For tg the last column is the fraction of the measured read bandwidth reached
// (weight bytes per token × t/s ÷ bandwidth); for pp, the fraction of the peak rate of the
// arithmetic the prompt's matrix products use (multiply-adds per token × t/s ÷ peak): int8 dot
// products for quantized weights at a level with the integer GEMM (AVX-512), bf16 dot products
// for f16 / bf16 weights where the bf16 GEMM runs (AVX512_BF16, not LOOM_BF16=0), f32 FMA otherwise,
// each peak measured by register-only loops on all the threads (machine.hpp's measure_peak).
// Multiply-adds per token are the layers' matrix parameters plus the output projection's divided
// by the prompt length (only the last position's logits are computed). The limits are measured
// right before every run with the same thread count and printed; the bandwidth is the faster of a
// buffer of at least 1 GiB (four times the last-level cache if larger) and the weights' own
// memory, each read as 1-8 streams per thread (the best counts). The f32 GEMM rate of loom's own
// kernel is printed too.
//
// --save writes --shape's random model as GGUF instead of measuring (with the tokenizer of
// --vocab, e.g. a llama.cpp ggml-vocab-*.gguf of the shape's vocabulary size), so that llama-bench,
// generate and applications run the very same weights.
//
// --parallel B1,B2,... measures batched decoding instead, as llama.cpp's llama-batched-bench (its
// -npp = -p, -ntg = -n, -npl = the list, prompts not shared): B sequences, each with its own
// prompt of -p tokens, then -n steps, each one Model::forward of B single-token inputs (one per
// sequence, each attending to its own pages of one nn::PagedKVCache), the next token of each the
// argmax of its logits (no sampler). Only the steps are timed: S_TG = B × n ÷ their time, as
// llama-batched-bench's S_TG. The prompts are evaluated once (untimed) and every run rewinds the
// sequences to them; the B values of one repetition run one after the other, repetitions alternate
// them. Printed per B: S_TG, S_TG ÷ B (each sequence's rate), S_TG over the smallest B's, and the
// two limits of a batched step: the weights it reads once for all B rows (weight bytes per token ×
// steps/s ÷ bandwidth) and its multiply-adds (layer and output matrices per token × S_TG ÷ the
// peak of the arithmetic its matrix products use with B rows; attention not counted).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <loom/loom.hpp>
#include <loom/machine.hpp>
#include <loom/io/gguf_export.hpp>
#include <loom/model/convert.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../examples/cli.hpp"
#include "random_blocks.hpp"

namespace {

using loom::cli::UsageError;

struct Options {
  std::string model, shape, type = "f32", output = "md", save, vocab;
  loom::DType kv_type = loom::DType::f32;
  std::vector<int> threads{2};
  std::vector<int> depths{0};
  std::vector<int> parallel;  ///< --parallel: sequences decoded together (empty: the pp / tg table)
  std::vector<int> prompts{128};  ///< -p: prompt lengths measured, each a pp row (0: none)
  int n_prompt = 128;             ///< the longest of them (the one --parallel takes)
  int n_gen = 64, reps = 3;
};

struct Shape {
  const char* name;
  loom::Config config;
};

loom::Config shape_config(const std::string& name) {
  loom::Config c;
  c.norm_eps = 1e-5f;
  if (name == "tinyllama-1.1b") {
    c.architecture = "llama";
    c.vocab_size = 32000, c.dim = 2048, c.n_layers = 22, c.n_heads = 32, c.n_kv_heads = 4, c.head_dim = 64;
    c.ffn_dim = 5632, c.max_seq_len = 2048, c.rope_layout = loom::RopeLayout::half_split, c.tied_embeddings = false;
  } else if (name == "llama2-7b-layer") {
    c.architecture = "llama";
    c.vocab_size = 32000, c.dim = 4096, c.n_layers = 1, c.n_heads = 32, c.n_kv_heads = 32, c.head_dim = 128;
    c.ffn_dim = 11008, c.max_seq_len = 4096, c.rope_layout = loom::RopeLayout::half_split, c.tied_embeddings = false;
  } else if (name == "gpt2-124m") {
    c.architecture = "gpt2";
    c.vocab_size = 50257, c.dim = 768, c.n_layers = 12, c.n_heads = 12, c.n_kv_heads = 12, c.head_dim = 64;
    c.ffn_dim = 3072, c.max_seq_len = 1024, c.norm = loom::NormKind::layer_norm;
    c.position = loom::PositionKind::learned, c.activation = loom::Activation::gelu_tanh, c.gated_ffn = false;
    c.qkv_bias = c.out_bias = c.ffn_bias = true, c.tied_embeddings = true;
  } else {
    throw UsageError("--shape: unknown shape '" + name + "' (tinyllama-1.1b, gpt2-124m, llama2-7b-layer)");
  }
  return c;
}

/// The weights' type, or one of llama.cpp's k-quant mixes (loom::WeightFormat): the types convert
/// writes, and Q2_K / Q3_K (random blocks here; loom reads them but has no quantizer for them).
loom::WeightFormat parse_type(const std::string& t) {
  if (const auto f = loom::parse_weight_format(t)) return *f;
  for (loom::DType d : {loom::DType::q2_k, loom::DType::q3_k})
    if (loom::to_string(d) == t) return {d};
  throw UsageError("--type: unsupported type '" + t + "' (" + std::string(loom::weight_format_names) + ", q2_k, q3_k)");
}

/// A model of the given shape with pseudo-random weights (values in ±0.05, norms 1), each matrix
/// stored in the type `f` gives it (loom::matrix_type).
std::shared_ptr<const loom::Model> random_model(const loom::Config& c, const loom::WeightFormat& f) {
  loom::Weights w;
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  auto make = [&](loom::Shape shape, loom::DType dt, bool ones = false) {
    const std::int64_t cols = shape[shape.rank - 1], rows = shape.numel() / cols;
    const std::size_t row_bytes = std::size_t(*loom::row_bytes(dt, cols));
    // 2 MiB-aligned and advised for huge pages, as loom's file mappings are (io/mapped_file.hpp),
    // so the table matches what a loaded file gets.
    auto buf = std::make_shared<loom::HugePageBuffer>(row_bytes * std::size_t(rows));
    std::vector<float> row(static_cast<std::size_t>(cols));
    for (std::int64_t r = 0; r < rows; ++r) {
      std::byte* dst = buf->data() + std::size_t(r) * row_bytes;
      if (loom::is_quantized(dt) && (loom::block_elems(dt) == loom::qk_k || dt == loom::DType::iq4_nl)) {
        // No quantizer for these: random blocks with small, valid f16 scales.
        loom::bench::random_blocks(dt, dst, row_bytes, 0.001f, [&] { return next() & 0xff; });
        continue;
      }
      for (float& v : row) v = ones ? 1.0f : (float(next() & 0xffffff) / float(1 << 24) - 0.5f) * 0.1f;
      loom::detail::store_row(dt, row.data(), dst, cols);
    }
    w.storage.push_back(buf);
    return loom::TensorRef{dt, shape, buf->data(), buf->size()};
  };
  // GPT-2's float checkpoints (Hugging Face's Conv1D) store the block matrices [in, out]; the
  // random model does too, so that the table measures the layout people load. (Quantized
  // weights are always [out, in], as GGUF stores them.)
  const bool conv1d = c.architecture == "gpt2" && !loom::is_quantized(f.type);
  using Role = loom::MatrixRole;
  auto type = [&](Role role, int layer, std::int64_t in) { return loom::matrix_type(f, role, layer, c.n_layers, in); };
  auto linear = [&](std::int64_t out, std::int64_t in, bool bias, bool in_out = false, Role role = Role::other,
                    int layer = 0) {
    loom::nn::Linear l;
    l.in_out = in_out;
    const loom::DType t = type(role, layer, in);
    l.weight = in_out ? make({in, out}, t) : make({out, in}, t);
    if (bias) l.bias = make({out}, loom::DType::f32);
    return l;
  };
  auto norm = [&] {
    loom::nn::NormWeights n;
    n.weight = make({c.dim}, loom::DType::f32, true);
    if (c.norm == loom::NormKind::layer_norm) n.bias = make({c.dim}, loom::DType::f32);
    return n;
  };
  w.token_embedding = make({c.vocab_size, c.dim}, type(c.tied_embeddings ? Role::output : Role::token_embedding, 0, c.dim));
  if (c.position == loom::PositionKind::learned) w.position_embedding = make({c.max_seq_len, c.dim}, loom::DType::f32);
  for (int l = 0; l < c.n_layers; ++l) {
    loom::LayerWeights lw;
    lw.attn_norm = norm();
    if (c.architecture == "gpt2") {
      lw.wqkv = linear(c.q_dim() + 2 * c.kv_dim(), c.dim, c.qkv_bias, conv1d, Role::attn_qkv, l);
    } else {
      lw.wq = linear(c.q_dim(), c.dim, c.qkv_bias);
      lw.wk = linear(c.kv_dim(), c.dim, c.qkv_bias);
      lw.wv = linear(c.kv_dim(), c.dim, c.qkv_bias, false, Role::attn_v, l);
    }
    lw.wo = linear(c.dim, c.q_dim(), c.out_bias, conv1d);
    lw.ffn_norm = norm();
    if (c.gated_ffn) lw.w_gate = linear(c.ffn_dim, c.dim, c.ffn_bias);
    lw.w_up = linear(c.ffn_dim, c.dim, c.ffn_bias, conv1d);
    lw.w_down = linear(c.dim, c.ffn_dim, c.ffn_bias, conv1d, Role::ffn_down, l);
    w.layers.push_back(lw);
  }
  w.final_norm = norm();
  if (c.tied_embeddings)
    w.output.weight = w.token_embedding;
  else
    w.output = linear(c.vocab_size, c.dim, false, false, Role::output);
  return std::make_shared<const loom::Model>(c, std::move(w));
}

using loom::matmul_params;
using loom::weight_bytes_per_token;

/// Multiply-adds per prompt token of n tokens: every layer matrix, and the output projection once
/// per prompt.
double prompt_multiply_adds(const loom::Model& m, int n) {
  const double output = m.weights().output.empty() ? 0.0 : double(m.weights().output.weight.numel());
  return matmul_params(m) - output + output / std::max(n, 1);
}

/// The arithmetic a prompt's layer matrices use: int8 dot products where the largest share of
/// their parameters is quantized and the kernel level has the integer GEMM, bf16 dot products
/// where it is f16 / bf16 and the bf16 GEMM runs, else f32 FMA.
loom::kernels::Arithmetic prompt_arithmetic(const loom::Model& m) {
  double quantized = 0, half = 0, other = 0;
  for (const auto& l : m.weights().layers)
    for (const loom::nn::Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      if (x->empty()) continue;
      const loom::DType t = x->weight.dtype;
      (loom::is_quantized(t) ? quantized : t == loom::DType::f16 || t == loom::DType::bf16 ? half : other) +=
          double(x->weight.numel());
    }
  if (quantized > half + other && loom::kernels::level_kernels().gemm_int8) return loom::kernels::Arithmetic::int8;
  if (half > quantized + other && loom::cpu_features().bf16_prompts) return loom::kernels::Arithmetic::bf16;
  return loom::kernels::Arithmetic::f32;
}

const char* arithmetic_name(loom::kernels::Arithmetic a) {
  return a == loom::kernels::Arithmetic::int8 ? "int8 peak" : a == loom::kernels::Arithmetic::bf16 ? "bf16 peak" : "f32 peak";
}

double total_params(const loom::Model& m) {
  const auto& c = m.config();
  return matmul_params(m) + (c.tied_embeddings ? 0.0 : double(c.vocab_size) * c.dim);
}

double total_bytes(const loom::Model& m) {
  const auto& w = m.weights();
  return weight_bytes_per_token(m) + (m.config().tied_embeddings ? 0.0 : double(w.token_embedding.nbytes));
}

double peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024.0;
}

struct Stat {
  double mean = 0, sd = 0, median = 0, min = 0, max = 0;
};
Stat stats(std::vector<double> v) {
  Stat s;
  for (double x : v) s.mean += x;
  s.mean /= double(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / double(v.size() - 1)) : 0.0;
  std::sort(v.begin(), v.end());
  s.median = v[v.size() / 2];
  s.min = v.front(), s.max = v.back();
  return s;
}

Options parse(int argc, char** argv) {
  using namespace loom::cli;
  Options o;
  Args args(argc, argv);
  while (!args.done()) {
    const std::string_view f = args.next();
    if (f == "-m") {
      o.model = args.value(f);
    } else if (f == "--shape") {
      o.shape = args.value(f);
    } else if (f == "--type") {
      o.type = args.value(f);
    } else if (f == "-p") {
      o.prompts.clear();
      for (std::int32_t p : parse_int_list(f, args.value(f))) {
        if (p < 0 || p > (1 << 16)) throw UsageError("-p: prompt lengths must be in [0, 65536]");
        o.prompts.push_back(p);
      }
      o.n_prompt = *std::max_element(o.prompts.begin(), o.prompts.end());
    } else if (f == "-n") {
      o.n_gen = int(parse_int(f, args.value(f), 0, 1 << 16));
    } else if (f == "-t") {
      o.threads.clear();
      for (std::int32_t t : parse_int_list(f, args.value(f))) {
        if (t < 1 || t > 1024) throw UsageError("-t: thread counts must be in [1, 1024]");
        o.threads.push_back(t);
      }
    } else if (f == "-d") {
      o.depths.clear();
      for (std::int32_t d : parse_int_list(f, args.value(f))) {
        if (d < 0 || d > (1 << 20)) throw UsageError("-d: depths must be in [0, 1048576]");
        o.depths.push_back(d);
      }
    } else if (f == "--parallel") {
      o.parallel.clear();
      for (std::int32_t b : parse_int_list(f, args.value(f))) {
        if (b < 1 || b > 4096) throw UsageError("--parallel: sequence counts must be in [1, 4096]");
        o.parallel.push_back(b);
      }
    } else if (f == "-r") {
      o.reps = int(parse_int(f, args.value(f), 1, 1000));
    } else if (f == "--kv-type") {
      const std::string_view t = args.value(f);
      if (t != "f32" && t != "f16") throw UsageError("--kv-type: expected f32 or f16, got '" + std::string(t) + "'");
      o.kv_type = t == "f16" ? loom::DType::f16 : loom::DType::f32;
    } else if (f == "-o") {
      o.output = args.value(f);
      if (o.output != "md" && o.output != "json") throw UsageError("-o: expected md or json");
    } else if (f == "--save") {
      o.save = args.value(f);
    } else if (f == "--vocab") {
      o.vocab = args.value(f);
    } else if (f == "-h" || f == "--help") {
      std::printf(
          "usage: loom-bench (-m MODEL | --shape tinyllama-1.1b|gpt2-124m|llama2-7b-layer [--type T])\n"
          "                  [-p 128[,512,...]] [-n 64] [-t 2[,1,...]] [-d 0[,512,...]] [-r 3] [--kv-type f32|f16]\n"
          "                  [--parallel 1,2,4,8,16] [-o md|json]\n"
          "  T: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl iq4_xs q2_k q3_k q4_k q5_k q6_k\n"
          "     q4_k_s q4_k_m q5_k_s q5_k_m (llama.cpp's mixes)\n"
          "       loom-bench --shape NAME [--type T] --save OUT.gguf [--vocab TOKENIZER]\n"
          "  --save: write the random model as GGUF (with --vocab's tokenizer) instead of measuring\n"
          "  --parallel: total decode rate of B sequences decoded together, for each B (llama-batched-bench's\n"
          "     S_TG): each sequence has its own -p token prompt, then -n batched steps are timed\n");
      std::exit(0);
    } else {
      throw UsageError("unknown flag '" + std::string(f) + "'");
    }
  }
  if (o.model.empty() == o.shape.empty()) throw UsageError("give exactly one of -m MODEL and --shape NAME");
  if (!o.shape.empty()) {
    shape_config(o.shape);
    parse_type(o.type);
  }
  if (!o.save.empty() && o.shape.empty()) throw UsageError("--save needs --shape");
  if (!o.vocab.empty() && o.save.empty()) throw UsageError("--vocab needs --save");
  if (!o.parallel.empty()) {
    if (o.n_prompt < 1 || o.n_gen < 1) throw UsageError("--parallel needs -p and -n of at least 1");
    if (o.prompts.size() != 1) throw UsageError("--parallel takes one -p length");
    if (o.depths != std::vector<int>{0}) throw UsageError("--parallel: -d is not supported (the depth is -p)");
  }
  return o;
}

/// The best read bandwidths seen: of the huge-page buffer, of the weights' own memory, and the faster.
struct BestReads {
  double read = 0, buffer = 0, weights = 0;
  /// Measures both (best of two passes each); returns the faster of this measurement.
  double measure(const loom::BandwidthProbe& probe, loom::kernels::ThreadPool& pool,
                 const std::vector<loom::ByteRange>& weight_memory) {
    const double b = probe.measure(pool, 2), own = loom::measure_read_bandwidth(pool, weight_memory, 2);
    read = std::max(read, std::max(b, own)), buffer = std::max(buffer, b), weights = std::max(weights, own);
    return std::max(b, own);
  }
};

/// The arithmetic of a batched decoding step's layer matrices with b rows (the largest share of
/// their parameters decides): integer dot products for quantized weights (the decode kernels up
/// to their row limit, then the integer GEMM where the level has it; f32 FMA on dequantized
/// blocks where it has not), bf16 dot products for f16 / bf16 weights where the bf16 GEMM takes
/// b rows, f32 FMA otherwise (the fused decode dots, the f32 GEMM).
loom::kernels::Arithmetic step_arithmetic(const loom::Model& m, std::int64_t b) {
  namespace kd = loom::kernels::detail;
  double quantized = 0, half = 0, other = 0;
  loom::DType q = loom::DType::q4_0, h = loom::DType::f16;  // one type of each kind in use
  for (const auto& l : m.weights().layers)
    for (const loom::nn::Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      if (x->empty()) continue;
      const loom::DType t = x->weight.dtype;
      const double n = double(x->weight.numel());
      if (loom::is_quantized(t))
        quantized += n, q = t;
      else if (t == loom::DType::f16 || t == loom::DType::bf16)
        half += n, h = t;
      else
        other += n;
    }
  if (quantized > half + other)
    return kd::uses_row_dots(q, b) || kd::int8_gemm(q) ? loom::kernels::Arithmetic::int8 : loom::kernels::Arithmetic::f32;
  if (half > quantized + other && !kd::uses_row_dots(h, b) && kd::bf16_gemm(h, m.config().dim))
    return loom::kernels::Arithmetic::bf16;
  return loom::kernels::Arithmetic::f32;
}

/// --parallel: llama-batched-bench's S_TG for loom (see the top of this file).
int run_parallel(const Options& o, const loom::Model& model, const std::string& name) {
  using Seq = loom::nn::PagedKVCache::SeqId;
  const auto& c = model.config();
  const std::int32_t positions = o.n_prompt + o.n_gen;
  if (positions > c.max_seq_len)
    throw UsageError("-p " + std::to_string(o.n_prompt) + " plus -n " + std::to_string(o.n_gen) +
                     " exceeds the model's context length " + std::to_string(c.max_seq_len));
  const int max_b = *std::max_element(o.parallel.begin(), o.parallel.end());
  const int min_b = *std::min_element(o.parallel.begin(), o.parallel.end());
  constexpr std::int32_t page = 64;
  const loom::nn::KVPageCount count{max_b * ((positions + page - 1) / page), page, positions};
  const double bytes_per_token = weight_bytes_per_token(model);
  const double multiply_adds = matmul_params(model);  // per sequence and step: every layer matrix and the output's
  const std::vector<loom::ByteRange> weights = loom::weight_ranges(model);
  auto token = [&](std::int64_t i) { return std::int32_t((i * 7919 + 1) % c.vocab_size); };
  auto argmax = [&](const float* row) {
    return std::int32_t(std::max_element(row, row + c.vocab_size) - row);
  };

  struct Row {
    int threads, b;
    loom::kernels::Arithmetic arithmetic;
    Stat tps, bandwidth, peak;  ///< S_TG, and its fractions of the two limits measured right before each run
  };
  std::vector<Row> rows;
  struct Limits {
    BestReads reads;
    std::map<loom::kernels::Arithmetic, double> peak;
  };
  std::map<int, Limits> limits;
  using clock = std::chrono::steady_clock;
  for (int t : o.threads) {
    loom::kernels::ThreadPool pool(t);
    const loom::BandwidthProbe probe(pool);
    auto bandwidth = [&] { return limits[t].reads.measure(probe, pool, weights); };
    auto peak = [&](loom::kernels::Arithmetic a) {
      const double p = loom::measure_peak(pool, a, 0.02, 2);
      limits[t].peak[a] = std::max(limits[t].peak[a], p);
      return p;
    };
    loom::nn::PagedKVCache kv(c, count, max_b, o.kv_type);
    loom::Activations act;
    // Every sequence's prompt (its own tokens), evaluated once in batches of up to 512 tokens; the
    // argmax of its last logits is the first token each run feeds.
    std::vector<Seq> seqs;
    const std::size_t n_seqs = std::size_t(max_b);
    std::vector<std::int32_t> prompts(n_seqs * std::size_t(o.n_prompt)), first(n_seqs);
    for (std::size_t i = 0; i < prompts.size(); ++i) prompts[i] = token(std::int64_t(i));
    for (int s = 0; s < max_b; ++s) seqs.push_back(kv.add());
    std::vector<loom::SequenceInput> inputs;
    for (int s = 0; s < max_b;) {
      inputs.clear();
      const int s0 = s;
      for (std::int64_t n = 0; s < max_b && (inputs.empty() || n + o.n_prompt <= 512); ++s, n += o.n_prompt)
        inputs.push_back({seqs[std::size_t(s)], {prompts.data() + std::size_t(s) * std::size_t(o.n_prompt), std::size_t(o.n_prompt)}});
      const auto logits = model.forward(inputs, kv, act, &pool);
      for (int i = s0; i < s; ++i) first[std::size_t(i)] = argmax(logits.row(i - s0));
    }

    std::vector<std::int32_t> next(n_seqs);
    std::vector<std::vector<double>> tps(o.parallel.size()), bw(o.parallel.size()), pk(o.parallel.size());
    for (int r = 0; r <= o.reps; ++r) {  // round 0 is the warm-up of every B
      for (std::size_t k = 0; k < o.parallel.size(); ++k) {
        const int b = o.parallel[k];
        const loom::kernels::Arithmetic arithmetic = step_arithmetic(model, b);
        inputs.clear();
        for (int s = 0; s < b; ++s) {
          kv.rewind(seqs[std::size_t(s)], o.n_prompt);
          next[std::size_t(s)] = first[std::size_t(s)];
          inputs.push_back({seqs[std::size_t(s)], {&next[std::size_t(s)], 1}});
        }
        const double read = r > 0 ? bandwidth() : 0.0, arithmetic_peak = r > 0 ? peak(arithmetic) : 0.0;
        const auto t0 = clock::now();
        for (int i = 0; i < o.n_gen; ++i) {
          const auto logits = model.forward(inputs, kv, act, &pool);  // copies the tokens before `next` changes
          for (int s = 0; s < b; ++s) next[std::size_t(s)] = argmax(logits.row(s));
        }
        const double seconds = std::chrono::duration<double>(clock::now() - t0).count();
        if (r == 0) continue;
        tps[k].push_back(double(b) * o.n_gen / seconds);
        bw[k].push_back(bytes_per_token * (o.n_gen / seconds) / read);
        pk[k].push_back(arithmetic_peak > 0 ? multiply_adds * tps[k].back() / arithmetic_peak : 0.0);
      }
    }
    for (std::size_t k = 0; k < o.parallel.size(); ++k)
      rows.push_back({t, o.parallel[k], step_arithmetic(model, o.parallel[k]), stats(tps[k]), stats(bw[k]), stats(pk[k])});
  }

  std::fprintf(stderr, "kernels: %s; CPU extensions: %s\n", loom::cpu_features().summary().c_str(),
               loom::cpu_features().extensions().c_str());
  for (const auto& [t, l] : limits) {
    std::string peaks;
    for (const auto& [a, p] : l.peak) peaks += std::string(", ") + arithmetic_name(a) + " " + std::to_string(int(p / 1e9 + 0.5)) + " GMAC/s";
    std::fprintf(stderr, "threads %d: best read bandwidth %.2f GB/s (%.2f GiB buffer %.2f, weights %.2f)%s\n", t,
                 l.reads.read / 1e9, double(loom::default_probe_bytes()) / double(1 << 30), l.reads.buffer / 1e9,
                 l.reads.weights / 1e9, peaks.c_str());
  }
  const std::string test = "pp" + std::to_string(o.n_prompt) + "+tg" + std::to_string(o.n_gen);
  auto base = [&](const Row& row) {  // the smallest B's median at the same threads
    for (const Row& x : rows)
      if (x.threads == row.threads && x.b == min_b) return x.tps.median;
    return row.tps.median;
  };
  const double size_gib = total_bytes(model) / double(1 << 30), params_b = total_params(model) / 1e9;
  if (o.output == "md") {
    std::printf("batched decoding (llama-batched-bench's S_TG): per step one Model::forward of B single-token inputs, "
                "each sequence against its own pages of one paged KV cache (%s), next tokens by argmax (no sampler); "
                "each sequence has its own %d-token prompt (evaluated untimed), then %d steps are timed; "
                "S_TG = B × %d ÷ their time, median (range) of %d runs\n\n",
                loom::to_string(o.kv_type).data(), o.n_prompt, o.n_gen, o.n_gen, o.reps);
    std::printf("| model | size | params | threads | test | B | S_TG t/s | t/s per sequence | × B=%d | weight reads of bandwidth | multiply-adds of peak |\n", min_b);
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (const Row& r : rows)
      std::printf("| %s | %.2f GiB | %.2f B | %d | %s | %d | %.2f (%.2f–%.2f) | %.2f | %.2f | %.1f %% (%.0f–%.0f) | "
                  "%.1f %% (%.0f–%.0f) of %s |\n",
                  name.c_str(), size_gib, params_b, r.threads, test.c_str(), r.b, r.tps.median, r.tps.min, r.tps.max,
                  r.tps.median / r.b, r.tps.median / base(r), 100.0 * r.bandwidth.median, 100.0 * r.bandwidth.min,
                  100.0 * r.bandwidth.max, 100.0 * r.peak.median, 100.0 * r.peak.min, 100.0 * r.peak.max,
                  arithmetic_name(r.arithmetic));
    std::printf("\npeak RSS %.2f GiB; weight bytes per step %.3f GiB; KV pool %.1f MiB; each run is compared with the "
                "limits measured right before it\n",
                peak_rss_bytes() / double(1 << 30), bytes_per_token / double(1 << 30),
                double(loom::nn::PagedKVCache::bytes_needed(c, count, o.kv_type)) / double(1 << 20));
  } else {
    std::printf("[\n");
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::printf("  {\"model\": \"%s\", \"size_bytes\": %.0f, \"params\": %.0f, \"threads\": %d, \"test\": \"%s\", "
                  "\"parallel\": %d, \"pp\": %d, \"tg\": %d, \"speed_tg_median\": %.4f, \"speed_tg_min\": %.4f, "
                  "\"speed_tg_max\": %.4f, \"speed_tg_per_sequence\": %.4f, \"speedup\": %.4f, "
                  "\"fraction_of_bandwidth\": %.4f, \"fraction_of_peak\": %.4f, \"step_arithmetic\": \"%s\", "
                  "\"read_bandwidth\": %.0f, \"peak_multiply_adds\": %.0f, \"peak_rss_bytes\": %.0f}%s\n",
                  name.c_str(), total_bytes(model), total_params(model), r.threads, test.c_str(), r.b, o.n_prompt,
                  o.n_gen, r.tps.median, r.tps.min, r.tps.max, r.tps.median / r.b, r.tps.median / base(r),
                  r.bandwidth.median, r.peak.median, arithmetic_name(r.arithmetic), limits[r.threads].reads.read,
                  limits[r.threads].peak[r.arithmetic], peak_rss_bytes(), i + 1 < rows.size() ? "," : "");
    }
    std::printf("]\n");
  }
  return 0;
}

int run(const Options& o) {
  std::shared_ptr<const loom::Model> model;
  std::string name;
  if (!o.model.empty()) {
    model = loom::load(o.model).model;
    name = o.model;
  } else {
    model = random_model(shape_config(o.shape), parse_type(o.type));
    name = o.shape + " " + o.type;
  }
  if (!o.save.empty()) {
    std::optional<loom::Tokenizer> tok;
    if (!o.vocab.empty()) tok = loom::load_tokenizer(o.vocab, model->config().vocab_size);
    loom::kernels::ThreadPool pool(std::max(1u, std::thread::hardware_concurrency()));
    loom::io::GgufExportOptions opt;
    opt.format = parse_type(o.type);
    opt.name = name;
    opt.pool = &pool;
    loom::io::write_gguf_model(o.save, model->config(), model->weights(), tok ? &*tok : nullptr, opt);
    std::printf("wrote %s (%s)\n", o.save.c_str(), name.c_str());
    return 0;
  }
  if (o.kv_type != loom::DType::f32) name += " (KV " + std::string(loom::to_string(o.kv_type)) + ")";
  if (!o.parallel.empty()) return run_parallel(o, *model, name);
  const auto& c = model->config();
  const double bytes_per_token = weight_bytes_per_token(*model);
  const int max_depth = *std::max_element(o.depths.begin(), o.depths.end());
  const std::int64_t ctx = std::int64_t(max_depth) + std::max(o.n_prompt, o.n_gen);
  if (ctx > c.max_seq_len)
    throw UsageError("-d " + std::to_string(max_depth) + " plus " + std::to_string(std::max(o.n_prompt, o.n_gen)) +
                     " tokens exceeds the model's context length " + std::to_string(c.max_seq_len));
  const std::vector<loom::ByteRange> weights = loom::weight_ranges(*model);

  struct Row {
    int threads;
    std::string test;
    Stat tps;
    Stat fraction;  ///< of the limit measured right before each run
  };
  std::vector<Row> rows;
  struct Limits : loom::MachineLimits {
    BestReads reads;
    double peak = 0;
  };
  const loom::kernels::Arithmetic arithmetic = prompt_arithmetic(*model);
  std::map<int, Limits> limits;
  for (int t : o.threads) {
    loom::kernels::ThreadPool pool(t);
    // The limits are re-measured right before every timed run and each run is compared with its
    // own: this machine's bandwidth drifts by tens of percent with its neighbours' load. The
    // bandwidth bound is the faster of a huge-page buffer and the weights' own memory.
    const loom::BandwidthProbe probe(pool);
    auto bandwidth = [&] {
      auto& l = limits[t];
      const double read = l.reads.measure(probe, pool, weights);
      l.read_bytes_per_second = l.reads.read;
      return read;
    };
    auto peak = [&] {
      const double p = loom::measure_peak(pool, arithmetic, 0.02, 2);
      limits[t].peak = std::max(limits[t].peak, p);
      return p;
    };
    if (o.n_prompt > 0) limits[t].gemm_flops_per_second = loom::measure_gemm_rate(pool, 2048, 1);
    loom::nn::KVCache kv(c, std::int32_t(ctx), o.kv_type);
    loom::Activations act;
    auto token = [&](std::int64_t i) { return std::int32_t((i * 7919 + 1) % c.vocab_size); };
    std::vector<std::int32_t> prompt(std::size_t(std::max({o.n_prompt, max_depth, 1})));
    for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = token(std::int64_t(i));
    using clock = std::chrono::steady_clock;
    for (int depth : o.depths) {
      // The cache is filled to `depth` once (a batched prompt); every repetition rewinds to it.
      kv.clear();
      if (depth > 0) model->forward({prompt.data(), std::size_t(depth)}, 0, kv, act, loom::Logits::last, &pool);
      const std::string at = depth > 0 ? " @ d" + std::to_string(depth) : "";
      for (const int n_prompt : o.prompts) {
        if (n_prompt == 0) continue;
        std::vector<double> tps, fraction;
        for (int r = 0; r <= o.reps; ++r) {  // run 0 is the warm-up
          kv.rewind(depth);
          const double limit = r > 0 ? peak() : 0.0;
          const auto t0 = clock::now();
          model->forward({prompt.data(), std::size_t(n_prompt)}, depth, kv, act, loom::Logits::last, &pool);
          const double s = std::chrono::duration<double>(clock::now() - t0).count();
          if (r == 0) continue;
          tps.push_back(n_prompt / s);
          fraction.push_back(prompt_multiply_adds(*model, n_prompt) * tps.back() / limit);
        }
        rows.push_back({t, "pp" + std::to_string(n_prompt) + at, stats(tps), stats(fraction)});
      }
      if (o.n_gen > 0) {
        std::vector<double> tps, fraction;
        for (int r = 0; r <= o.reps; ++r) {
          kv.rewind(depth);
          std::int32_t tok = prompt[0];
          const double limit = r > 0 ? bandwidth() : 0.0;
          const auto t0 = clock::now();
          for (int i = 0; i < o.n_gen; ++i) {
            const auto logits = model->forward({&tok, 1}, kv.size(), kv, act, loom::Logits::last, &pool);
            tok = std::int32_t(std::max_element(logits.data(), logits.data() + logits.numel()) - logits.data());
          }
          const double s = std::chrono::duration<double>(clock::now() - t0).count();
          if (r == 0) continue;
          tps.push_back(o.n_gen / s);
          fraction.push_back(bytes_per_token * tps.back() / limit);
        }
        rows.push_back({t, "tg" + std::to_string(o.n_gen) + at, stats(tps), stats(fraction)});
      }
    }
  }

  const double size_gib = total_bytes(*model) / double(1 << 30);
  const double params_b = total_params(*model) / 1e9;
  std::fprintf(stderr, "kernels: %s; CPU extensions: %s\n", loom::cpu_features().summary().c_str(),
               loom::cpu_features().extensions().c_str());
  for (const auto& [t, l] : limits)
    std::fprintf(stderr,
                 "threads %d: best read bandwidth %.2f GB/s (%.2f GiB buffer %.2f, weights %.2f), %s %.1f GMAC/s, "
                 "loom's f32 GEMM %.1f GFLOP/s\n",
                 t, l.read_bytes_per_second / 1e9, double(loom::default_probe_bytes()) / double(1 << 30),
                 l.reads.buffer / 1e9, l.reads.weights / 1e9, arithmetic_name(arithmetic), l.peak / 1e9,
                 l.gemm_flops_per_second / 1e9);
  if (o.output == "md") {
    std::printf("| model | size | params | threads | test | t/s | of limit (median, range) |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (const Row& r : rows)
      std::printf("| %s | %.2f GiB | %.2f B | %d | %s | %.2f ± %.2f | %.1f %% (%.0f–%.0f) of %s |\n", name.c_str(),
                  size_gib, params_b, r.threads, r.test.c_str(), r.tps.mean, r.tps.sd, 100.0 * r.fraction.median,
                  100.0 * r.fraction.min, 100.0 * r.fraction.max, r.test.rfind("tg", 0) == 0 ? "bandwidth" : arithmetic_name(arithmetic));
    std::printf("\npeak RSS %.2f GiB; weight bytes per token %.3f GiB; each run is compared with the limit measured "
                "right before it\n",
                peak_rss_bytes() / double(1 << 30), bytes_per_token / double(1 << 30));
  } else {
    std::printf("[\n");
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      const auto& lim = limits[r.threads];
      std::printf("  {\"model\": \"%s\", \"size_bytes\": %.0f, \"params\": %.0f, \"threads\": %d, \"test\": \"%s\", "
                  "\"tps_mean\": %.4f, \"tps_sd\": %.4f, \"tps_median\": %.4f, \"fraction_of_limit\": %.4f, "
                  "\"fraction_min\": %.4f, \"fraction_max\": %.4f, "
                  "\"read_bandwidth\": %.0f, \"gemm_flops\": %.0f, \"prompt_arithmetic\": \"%s\", "
                  "\"peak_multiply_adds\": %.0f, \"peak_rss_bytes\": %.0f}%s\n",
                  name.c_str(), total_bytes(*model), total_params(*model), r.threads, r.test.c_str(), r.tps.mean,
                  r.tps.sd, r.tps.median, r.fraction.median, r.fraction.min, r.fraction.max, lim.read_bytes_per_second, lim.gemm_flops_per_second,
                  arithmetic_name(arithmetic), lim.peak, peak_rss_bytes(), i + 1 < rows.size() ? "," : "");
    }
    std::printf("]\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "loom-bench: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const loom::Error& e) {
    std::fprintf(stderr, "loom-bench: %s\n", e.what());
    return 1;
  }
}
