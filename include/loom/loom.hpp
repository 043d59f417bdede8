// loom: header-only CPU inference for decoder-only transformers (GPT-2 and LLaMA families).
//
//   #include <loom/loom.hpp>
//   loom::Loaded m = loom::load("path/to/model");
//   loom::Session session(*m.model, {.n_ctx = 512, .n_threads = 2});
//   loom::StreamDecoder text(*m.tokenizer);
//   session.generate(m.tokenizer->encode("Once upon a time"), {.sampler = m.sampler, .max_new_tokens = 64},
//                    [&](std::int32_t id) { std::cout << text.push(id) << std::flush; return true; });
#pragma once

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/cpu.hpp"
#include "loom/generate.hpp"
#include "loom/batch.hpp"
#include "loom/chat.hpp"
#include "loom/chat_session.hpp"
#include "loom/io/gguf.hpp"
#include "loom/io/gguf_model.hpp"
#include "loom/io/gguf_tokenizer.hpp"
#include "loom/io/hf_model.hpp"
#include "loom/io/llama2c.hpp"
#include "loom/io/llama2c_tokenizer.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/io/tokenizer_json.hpp"
#include "loom/load.hpp"
#include "loom/model/config.hpp"
#include "loom/model/model.hpp"
#include "loom/model/weights.hpp"
#include "loom/sampling/sampler.hpp"
#include "loom/tensor.hpp"
#include "loom/tokenizer/stream_decoder.hpp"
#include "loom/tokenizer/tokenizer.hpp"
