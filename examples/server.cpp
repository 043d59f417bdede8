// loom-server: an OpenAI-compatible HTTP server (as llama.cpp's llama-server) over BatchSession.
//
//   loom-server -m MODEL [-z TOKENIZER] [--host 127.0.0.1] [--port 8080] [--parallel N] [--queue N]
//               [--timeout SECONDS] [--api-key KEY] [-c CTX] [-t THREADS] [--chat-template NAME]
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions (both with "stream": true as
// server-sent events in OpenAI's chunk format), GET /v1/models, GET /health.
//
// Threads: one worker owns the BatchSession and loops step(), sleeping on a condition variable
// when nothing runs; HTTP handler threads (cpp-httplib's pool) parse a request, submit it and
// wait for its text. The worker turns tokens into text (a StreamDecoder and a StopFilter per
// continuation, so a stop string ends the continuation at the token that completes it) and
// hands the text to the waiting handler. A streaming client that goes away (a failed write)
// cancels its request; a request that outlives --timeout is cancelled too.
//
// Every bad request is answered with a 4xx JSON error in OpenAI's shape
// {"error": {"message", "type", "param", "code"}}; nothing a client sends stops the server.
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <loom/loom.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli.hpp"
#include "generate_args.hpp"

namespace {

using json = nlohmann::ordered_json;
using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Command line

struct ServerArgs {
  std::string model, tokenizer, host = "127.0.0.1", api_key, alias, chat_template;
  int port = 8080;
  std::int32_t n_ctx = 0, threads = 1, parallel = 4, queue = 64, default_max_tokens = -1;
  double timeout = 600;             ///< seconds a request may take in all (0: no limit)
  std::uint64_t max_body = 4 << 20;  ///< bytes of a request body
  std::uint64_t max_memory = 0;
  loom::DType kv_type = loom::DType::f32;
  bool help = false;
  std::vector<std::string> notes;
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: loom-server -m MODEL [options]\n"
               "  -m PATH                 model (llama2.c .bin, Hugging Face folder, .safetensors or .gguf)\n"
               "  -z PATH                 tokenizer file when the model carries none\n"
               "  --host HOST             address to listen on (default: 127.0.0.1)\n"
               "  --port N                port (default: 8080; 0: any free port, printed at start)\n"
               "  -np, --parallel N       sequences decoded together (default: 4)\n"
               "  --queue N               requests that may wait for a slot; more get HTTP 503 (default: 64)\n"
               "  --timeout SECONDS       a request still running after this long is cancelled (default: 600;\n"
               "                          0: no limit)\n"
               "  --api-key KEY           require 'Authorization: Bearer KEY' (all endpoints but /health)\n"
               "  -a, --alias NAME        the model id clients name (default: the model's file or folder name)\n"
               "  --chat-template NAME    chatml, llama2, llama3, mistral, zephyr, phi3 (default: the model's;\n"
               "                          chatml when it has none)\n"
               "  -n N                    max_tokens when a request gives none (default: -1 = until end of\n"
               "                          text or full context)\n"
               "  -c N                    context size per sequence (default: 0 = the model's)\n"
               "  -t N                    threads (default: 1)\n"
               "  --max-body BYTES        largest request body (suffixes K, M, G; default: 4M)\n"
               "  --max-memory BYTES      cap on KV cache plus scratch (default: the available memory)\n"
               "  --cache-type f32|f16    KV cache element type (default: f32)\n"
               "  -ngl N, --mlock, -fa, -b N, -ub N: llama.cpp's flags, accepted and ignored with a note\n"
               "  -h, --help              this help\n");
}

ServerArgs parse(int argc, char** argv) {
  using namespace loom::cli;
  ServerArgs a;
  Args args(argc, argv);
  while (!args.done()) {
    const std::string_view f = args.next();
    if (f == "-h" || f == "--help") {
      a.help = true;
      return a;
    } else if (f == "-m" || f == "--model") {
      a.model = args.value(f);
    } else if (f == "-z" || f == "--tokenizer") {
      a.tokenizer = args.value(f);
    } else if (f == "--host") {
      a.host = args.value(f);
      if (a.host.empty()) throw UsageError("--host: empty address");
    } else if (f == "--port") {
      a.port = int(parse_int(f, args.value(f), 0, 65535));
    } else if (f == "-np" || f == "--parallel") {
      a.parallel = std::int32_t(parse_int(f, args.value(f), 1, 256));
    } else if (f == "--queue") {
      a.queue = std::int32_t(parse_int(f, args.value(f), 0, 100000));
    } else if (f == "--timeout") {
      a.timeout = parse_float(f, args.value(f));
      if (a.timeout < 0) throw UsageError("--timeout: expected seconds >= 0");
    } else if (f == "--api-key") {
      a.api_key = args.value(f);
      if (a.api_key.empty()) throw UsageError("--api-key: the key is empty");
    } else if (f == "-a" || f == "--alias") {
      a.alias = args.value(f);
      if (a.alias.empty()) throw UsageError("--alias: the name is empty");
    } else if (f == "--chat-template") {
      a.chat_template = args.value(f);
      try {
        loom::chat_format_from_name(a.chat_template);
      } catch (const loom::Error& e) {
        throw UsageError(std::string("--chat-template: ") + e.what());
      }
    } else if (f == "-n" || f == "--n-predict") {
      a.default_max_tokens = std::int32_t(parse_int(f, args.value(f), -1, INT32_MAX));
    } else if (f == "-c" || f == "--ctx-size") {
      a.n_ctx = std::int32_t(parse_int(f, args.value(f), 0, INT32_MAX));
    } else if (f == "-t" || f == "--threads") {
      a.threads = std::int32_t(parse_int(f, args.value(f), 1, 1024));
    } else if (f == "--max-body") {
      a.max_body = parse_bytes(f, args.value(f));
      if (a.max_body == 0) throw UsageError("--max-body: must be > 0");
    } else if (f == "--max-memory") {
      a.max_memory = parse_bytes(f, args.value(f));
    } else if (f == "--cache-type") {
      a.kv_type = parse_cache_type(f, args.value(f));
    } else if (std::optional<std::string> note = ignored_llama_flag(f, args)) {
      a.notes.push_back(std::move(*note));
    } else {
      throw UsageError("unknown flag '" + std::string(f) + "' (see -h)");
    }
  }
  if (a.model.empty()) throw UsageError("-m MODEL is required (see -h)");
  return a;
}

// ---------------------------------------------------------------------------------------------
// Errors in OpenAI's shape

/// A request the server refuses: HTTP status and OpenAI's error fields.
struct ApiError {
  int status = 400;
  std::string message, type = "invalid_request_error", param, code;
};

[[noreturn]] void refuse(std::string message, std::string param = {}, std::string code = {}, int status = 400) {
  throw ApiError{status, std::move(message), status >= 500 ? "server_error" : "invalid_request_error", std::move(param),
                 std::move(code)};
}

json error_json(const ApiError& e) {
  auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  return {{"error", {{"message", e.message}, {"type", e.type}, {"param", or_null(e.param)}, {"code", or_null(e.code)}}}};
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_json(e).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// ---------------------------------------------------------------------------------------------
// A request in flight and the worker that runs every request

/// One continuation's output: text the handler has not taken yet, and how it ended.
struct Choice {
  Choice(const loom::Tokenizer& tok, std::vector<std::string> stops) : decoder(tok), filter(std::move(stops)) {}
  loom::StreamDecoder decoder;  // worker thread only
  loom::cli::StopFilter filter;  // worker thread only
  std::string pending;           // under Job::m
  bool stopped_by_string = false, done = false;
  loom::GenerateStats stats;
};

struct Job {
  std::mutex m;
  std::condition_variable cv;
  std::deque<Choice> choices;
  std::int32_t remaining = 0;         ///< continuations not yet done
  std::atomic<bool> abandoned{false};  ///< the client went away or timed out: stop generating
  loom::BatchSession::RequestId id = 0;
  std::int32_t prompt_tokens = 0;
};

const char* finish_reason(const Choice& c) {
  if (c.stopped_by_string) return "stop";
  switch (c.stats.stop) {
    case loom::StopReason::end_of_generation: return "stop";
    case loom::StopReason::max_tokens:
    case loom::StopReason::context_full: return "length";
    default: return "stop";  // cancelled / callback: only seen by a client that is no longer reading
  }
}

class Engine {
 public:
  Engine(const loom::Model& model, const loom::Tokenizer& tok, const loom::BatchOptions& options, std::size_t capacity)
      : tok_(&tok), batch_(model, options), capacity_(capacity), worker_([this] { loop(); }) {}
  ~Engine() {
    {
      std::lock_guard lock(m_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  const loom::BatchOptions& options() const { return batch_.options(); }

  /// Submits a request; throws ApiError (503 when the queue is full, 400 for what BatchSession
  /// refuses).
  std::shared_ptr<Job> submit(std::vector<std::int32_t> prompt, loom::GenerateParams params, std::int32_t n,
                              const std::vector<std::string>& stops) {
    auto job = std::make_shared<Job>();
    job->prompt_tokens = std::int32_t(prompt.size());
    job->remaining = n;
    for (std::int32_t i = 0; i < n; ++i) {
      Choice& c = job->choices.emplace_back(*tok_, stops);
      c.decoder.skip(prompt);  // the leading-space state after the prompt, as generate prints it
    }
    loom::BatchRequest r;
    r.prompt = std::move(prompt);
    r.params = std::move(params);
    r.n = n;
    r.on_token = [this, job](std::int32_t i, std::int32_t id) { return on_token(*job, i, id); };
    r.on_done = [this, job](std::int32_t i, const loom::GenerateStats& s) { on_done(*job, i, s); };
    {
      std::lock_guard lock(m_);
      if (in_flight_ >= capacity_)
        throw ApiError{503, "the server is busy: " + std::to_string(in_flight_) +
                                " requests are running or queued (--parallel + --queue); retry later",
                       "server_error", "", "server_busy"};
      ++in_flight_;
    }
    try {
      job->id = batch_.submit(std::move(r));
    } catch (const loom::Error& e) {
      release_slot();
      refuse(e.what(), "", e.kind() == loom::ErrorKind::capacity ? "context_length_exceeded" : "");
    }
    {
      std::lock_guard lock(m_);
      std::lock_guard job_lock(job->m);
      if (job->remaining > 0) jobs_[job->id] = job;  // (the worker may have ended it already)
      ++events_;
    }
    cv_.notify_all();
    return job;
  }

  /// Stops a request (the client went away, or its time is up).
  void cancel(Job& job) {
    job.abandoned = true;
    batch_.cancel(job.id);
    {
      std::lock_guard lock(m_);
      ++events_;
    }
    cv_.notify_all();
  }

  /// Cancels every request still running (shutdown).
  void cancel_all() {
    std::vector<std::shared_ptr<Job>> all;
    {
      std::lock_guard lock(m_);
      for (auto& [id, weak] : jobs_)
        if (auto j = weak.lock()) all.push_back(j);
    }
    for (auto& j : all) cancel(*j);
  }

 private:
  bool on_token(Job& job, std::int32_t i, std::int32_t id) {
    Choice& c = job.choices[std::size_t(i)];
    bool stopped = false;
    std::string text = c.filter.push(c.decoder.push(id), stopped);
    {
      std::lock_guard lock(job.m);
      c.pending += text;
      c.stopped_by_string = stopped;
    }
    job.cv.notify_all();
    return !stopped && !job.abandoned;
  }

  void on_done(Job& job, std::int32_t i, const loom::GenerateStats& stats) {
    Choice& c = job.choices[std::size_t(i)];
    std::string rest;
    bool stopped = false;
    if (!c.stopped_by_string && stats.stop != loom::StopReason::cancelled) {
      rest = c.filter.push(c.decoder.finish(), stopped);
      if (!stopped) rest += c.filter.finish();
    }
    bool last = false;
    {
      std::lock_guard lock(job.m);
      c.pending += rest;
      c.stopped_by_string = c.stopped_by_string || stopped;
      c.stats = stats;
      c.done = true;
      last = --job.remaining == 0;
    }
    job.cv.notify_all();
    if (last) {
      {
        std::lock_guard lock(m_);
        jobs_.erase(job.id);
      }
      release_slot();
    }
  }

  void release_slot() {
    std::lock_guard lock(m_);
    --in_flight_;
  }

  void loop() {
    for (;;) {
      std::uint64_t seen = 0;
      {
        std::lock_guard lock(m_);
        if (stopping_) return;
        seen = events_;
      }
      bool busy = false;
      try {
        busy = batch_.step();
      } catch (const std::exception& e) {  // a bug, not input: say so and keep serving
        std::fprintf(stderr, "loom-server: step failed: %s\n", loom::cli::one_line(e.what()).c_str());
      }
      if (!busy) {
        std::unique_lock lock(m_);
        cv_.wait(lock, [&] { return stopping_ || events_ != seen; });
      }
    }
  }

  const loom::Tokenizer* tok_;
  loom::BatchSession batch_;
  std::mutex m_;
  std::condition_variable cv_;
  std::uint64_t events_ = 0;  ///< submits and cancels: wakes the worker
  bool stopping_ = false;
  std::size_t capacity_, in_flight_ = 0;
  std::map<loom::BatchSession::RequestId, std::weak_ptr<Job>> jobs_;
  std::thread worker_;  // last: starts after everything above exists
};

// ---------------------------------------------------------------------------------------------
// Request parsing

/// The body's field `key` when present and not null.
const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::string type_of(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

std::optional<double> get_number(const json& body, const char* key, double lo, double hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) refuse(std::string(key) + ": expected a number, got " + type_of(*v), key, "invalid_type");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    refuse(std::string(key) + ": " + v->dump() + " is outside [" + json(lo).dump() + ", " + json(hi).dump() + "]", key,
           "invalid_value");
  return x;
}

std::optional<std::int64_t> get_int(const json& body, const char* key, std::int64_t lo, std::int64_t hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) refuse(std::string(key) + ": expected an integer, got " + type_of(*v), key, "invalid_type");
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > std::uint64_t(INT64_MAX))
    refuse(std::string(key) + ": " + v->dump() + " is too large", key, "invalid_value");
  const std::int64_t x = v->get<std::int64_t>();
  if (x < lo || x > hi)
    refuse(std::string(key) + ": " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) +
               "]",
           key, "invalid_value");
  return x;
}

std::optional<bool> get_bool(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) refuse(std::string(key) + ": expected a boolean, got " + type_of(*v), key, "invalid_type");
  return v->get<bool>();
}

/// Everything a completion request asks for, checked.
struct Parsed {
  bool chat = false, stream = false, include_usage = false;
  std::vector<std::int32_t> prompt;
  loom::GenerateParams params;
  std::int32_t n = 1;
  std::vector<std::string> stops;
};

struct ServerState {
  ServerArgs args;
  loom::Loaded loaded;
  loom::ChatFormat chat_format = loom::ChatFormat::chatml;
  std::string model_id;
  std::time_t started = 0;
  std::unique_ptr<Engine> engine;
  std::atomic<std::uint64_t> next_id{1};
};

std::vector<std::int32_t> encode_text(const ServerState& s, const std::string& text, bool add_special) {
  return s.loaded.tokenizer->encode(text, add_special, /*parse_special=*/true);
}

/// The text of a chat message's content: a string, or an array of {"type": "text", "text": ...}.
std::string message_content(const json& content, std::size_t index) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  if (content.is_null()) return {};
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) refuse(param + ": expected a string or an array of text parts, got " + type_of(content), param, "invalid_type");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      refuse(param + ": only {\"type\": \"text\", \"text\": ...} parts are supported", param, "invalid_value");
    text += part["text"].get<std::string>();
  }
  return text;
}

Parsed parse_request(const ServerState& s, const std::string& raw, bool chat) {
  json body;
  try {
    body = json::parse(raw);
  } catch (const json::exception& e) {
    refuse(std::string("the body is not valid JSON: ") + e.what(), "", "invalid_json");
  }
  if (!body.is_object()) refuse("the body must be a JSON object, got " + type_of(body), "", "invalid_json");
  Parsed p;
  p.chat = chat;

  if (const json* m = field(body, "model")) {
    if (!m->is_string()) refuse("model: expected a string, got " + type_of(*m), "model", "invalid_type");
    if (m->get<std::string>() != s.model_id)
      refuse("the model '" + m->get<std::string>() + "' does not exist; this server serves '" + s.model_id + "'", "model",
             "model_not_found", 404);
  }
  p.stream = get_bool(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) refuse("stream_options: expected an object, got " + type_of(*so), "stream_options", "invalid_type");
    p.include_usage = get_bool(*so, "include_usage").value_or(false);
  }

  // Sampling: the model's defaults (llama.cpp's with generation_config.json), then the request's.
  loom::SamplerParams& sp = p.params.sampler;
  sp = s.loaded.sampler;
  if (auto t = get_number(body, "temperature", 0, 2)) sp.temperature = float(*t);
  if (auto t = get_number(body, "top_p", 0, 1)) sp.top_p = float(*t);
  if (auto t = get_number(body, "min_p", 0, 1)) sp.min_p = float(*t);
  if (auto t = get_int(body, "top_k", 0, INT32_MAX)) sp.top_k = std::int32_t(*t);
  if (auto t = get_number(body, "presence_penalty", -2, 2)) sp.presence_penalty = float(*t);
  if (auto t = get_number(body, "frequency_penalty", -2, 2)) sp.frequency_penalty = float(*t);
  if (auto t = get_number(body, "repeat_penalty", 0, 10)) sp.repeat_penalty = float(*t);
  if (auto t = get_int(body, "repeat_last_n", -1, INT32_MAX)) sp.repeat_last_n = std::int32_t(*t);
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) refuse("seed: expected an integer, got " + type_of(*seed), "seed", "invalid_type");
    if (seed->is_number_unsigned())
      sp.seed = seed->get<std::uint64_t>();
    else if (seed->get<std::int64_t>() == -1)
      sp.seed = loom::default_seed;  // llama.cpp's "random"
    else
      refuse("seed: expected -1 (random) or an integer >= 0, got " + seed->dump(), "seed", "invalid_value");
  }
  if (sp.seed == loom::default_seed) sp.seed = loom::Rng::resolve_seed(loom::default_seed);  // continuation i: seed + i
  try {
    sp.validate();
  } catch (const loom::Error& e) {
    refuse(e.what(), "", "invalid_value");
  }

  std::optional<std::int64_t> max_tokens = get_int(body, "max_tokens", 1, INT32_MAX);
  if (auto m = get_int(body, "max_completion_tokens", 1, INT32_MAX)) max_tokens = m;
  p.params.max_new_tokens = max_tokens ? std::int32_t(*max_tokens) : s.args.default_max_tokens;
  p.params.end_of_generation = s.loaded.end_of_generation;
  p.params.ignore_eos = get_bool(body, "ignore_eos").value_or(false);  // llama.cpp's
  p.n = std::int32_t(get_int(body, "n", 1, s.args.parallel).value_or(1));

  if (const json* stop = field(body, "stop")) {
    auto add = [&](const json& v) {
      if (!v.is_string()) refuse("stop: expected a string or an array of strings, got " + type_of(v), "stop", "invalid_type");
      const std::string str = v.get<std::string>();
      if (str.empty() || str.size() > 1024) refuse("stop: each stop string must have 1 to 1024 bytes", "stop", "invalid_value");
      p.stops.push_back(str);
    };
    if (stop->is_array()) {
      if (stop->size() > 16) refuse("stop: at most 16 stop strings, got " + std::to_string(stop->size()), "stop", "invalid_value");
      for (const json& v : *stop) add(v);
    } else {
      add(*stop);
    }
  }
  if (get_bool(body, "logprobs").value_or(false) || field(body, "top_logprobs"))
    refuse("logprobs are not supported by loom-server", "logprobs", "unsupported_parameter");
  if (const json* tools = field(body, "tools"); tools && !(tools->is_array() && tools->empty()))
    refuse("tools are not supported by loom-server", "tools", "unsupported_parameter");
  if (get_bool(body, "echo").value_or(false)) refuse("echo is not supported by loom-server", "echo", "unsupported_parameter");

  if (chat) {
    const json* messages = field(body, "messages");
    if (!messages) refuse("messages: required", "messages", "missing_required_parameter");
    if (!messages->is_array() || messages->empty())
      refuse("messages: expected a non-empty array, got " + (messages->is_array() ? std::string("an empty array") : type_of(*messages)),
             "messages", "invalid_type");
    std::vector<loom::ChatMessage> conversation;
    for (std::size_t i = 0; i < messages->size(); ++i) {
      const json& m = (*messages)[i];
      const std::string at = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) refuse(at + ": expected an object, got " + type_of(m), at, "invalid_type");
      const json* role = field(m, "role");
      if (!role || !role->is_string()) refuse(at + ".role: expected a string", at + ".role", "invalid_type");
      std::string r = role->get<std::string>();
      if (r == "developer") r = "system";  // OpenAI's newer name for the system role
      if (r != "system" && r != "user" && r != "assistant")
        refuse(at + ".role: '" + r + "' is not supported (system, developer, user or assistant)", at + ".role", "invalid_value");
      conversation.push_back({r, message_content(m.contains("content") ? m["content"] : json(nullptr), i)});
    }
    const std::string text = loom::format_chat(s.chat_format, conversation, /*add_generation_prompt=*/true);
    p.prompt = encode_text(s, text, /*add_special=*/false);
    const loom::Tokenizer& tok = *s.loaded.tokenizer;  // BOS as ChatSession adds it
    if (tok.add_bos() && tok.bos_id() >= 0 && (p.prompt.empty() || p.prompt.front() != tok.bos_id()))
      p.prompt.insert(p.prompt.begin(), tok.bos_id());
  } else {
    const json* prompt = field(body, "prompt");
    if (!prompt) refuse("prompt: required", "prompt", "missing_required_parameter");
    if (prompt->is_string()) {
      p.prompt = encode_text(s, prompt->get<std::string>(), true);
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      p.prompt = encode_text(s, (*prompt)[0].get<std::string>(), true);
    } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
      const std::int32_t vocab = s.loaded.model->config().vocab_size;
      for (const json& id : *prompt) {
        if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= vocab)
          refuse("prompt: token ids must be integers in [0, " + std::to_string(vocab) + ")", "prompt", "invalid_value");
        p.prompt.push_back(std::int32_t(id.get<std::int64_t>()));
      }
    } else if (prompt->is_array() && prompt->size() > 1 && (*prompt)[0].is_string()) {
      refuse("prompt: one prompt per request (send several requests, or use n for several continuations)", "prompt",
             "invalid_value");
    } else {
      refuse("prompt: expected a string or an array of token ids, got " + type_of(*prompt), "prompt", "invalid_type");
    }
  }
  if (p.prompt.empty()) refuse(std::string(chat ? "messages" : "prompt") + ": encodes to no tokens", chat ? "messages" : "prompt", "invalid_value");
  const std::int32_t n_ctx = s.engine->options().n_ctx;
  if (std::int64_t(p.prompt.size()) >= n_ctx)
    refuse("the prompt has " + std::to_string(p.prompt.size()) + " tokens but the context holds " + std::to_string(n_ctx) +
               " (one more is needed to generate)",
           chat ? "messages" : "prompt", "context_length_exceeded");
  return p;
}

// ---------------------------------------------------------------------------------------------
// Responses

json usage_json(const Job& job) {
  std::int64_t completion = 0;
  for (const Choice& c : job.choices) completion += c.stats.generated_tokens;
  return {{"prompt_tokens", job.prompt_tokens},
          {"completion_tokens", completion},
          {"total_tokens", job.prompt_tokens + completion}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// Waits until the job ends or its time is up (then cancels it). Returns false on timeout.
bool wait_done(Engine& engine, Job& job, std::optional<clock_type::time_point> deadline) {
  std::unique_lock lock(job.m);
  auto done = [&] { return job.remaining == 0; };
  if (deadline ? job.cv.wait_until(lock, *deadline, done) : (job.cv.wait(lock, done), true)) return true;
  lock.unlock();
  engine.cancel(job);
  lock.lock();
  job.cv.wait(lock, done);  // the worker ends it at its next step
  return false;
}

ApiError timeout_error(double seconds) {
  return {504, "the request did not finish within the server's --timeout of " + json(seconds).dump() + " s; it was cancelled",
          "server_error", "", "timeout"};
}

void handle_completion(ServerState& s, const httplib::Request& req, httplib::Response& res, bool chat) {
  const Parsed p = parse_request(s, req.body, chat);
  std::shared_ptr<Job> job = s.engine->submit(p.prompt, p.params, p.n, p.stops);
  const std::optional<clock_type::time_point> deadline =
      s.args.timeout > 0 ? std::optional(clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                                                  std::chrono::duration<double>(s.args.timeout)))
                         : std::nullopt;
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(s.next_id++);
  const std::int64_t created = std::int64_t(std::time(nullptr));
  const char* object = chat ? "chat.completion" : "text_completion";

  if (!p.stream) {
    if (!wait_done(*s.engine, *job, deadline)) {
      std::fprintf(stderr, "loom-server: %s: timed out after %g s; request cancelled\n", id.c_str(), s.args.timeout);
      return send_error(res, timeout_error(s.args.timeout));
    }
    json choices = json::array();
    for (std::size_t i = 0; i < job->choices.size(); ++i) {
      const Choice& c = job->choices[i];
      json choice = {{"index", i}};
      if (chat)
        choice["message"] = {{"role", "assistant"}, {"content", c.pending}, {"refusal", nullptr}};
      else
        choice["text"] = c.pending;
      choice["logprobs"] = nullptr;
      choice["finish_reason"] = finish_reason(c);
      choices.push_back(std::move(choice));
    }
    const json out = {{"id", id},           {"object", object},   {"created", created},
                      {"model", s.model_id}, {"system_fingerprint", "loom"}, {"choices", std::move(choices)},
                      {"usage", usage_json(*job)}};
    res.set_content(dump(out), "application/json");
    return;
  }

  // Streaming: one chunk per piece of text, a last chunk per choice with its finish_reason, the
  // usage chunk when asked for, then [DONE].
  const std::string chunk_object = chat ? "chat.completion.chunk" : "text_completion";
  auto chunk = [&s, id, created, chunk_object, chat, usage = p.include_usage](std::size_t index, const std::string* text,
                                                                             const char* finish, bool first) {
    json choice = {{"index", index}};
    if (chat) {
      json delta = json::object();
      if (first) delta["role"] = "assistant";
      if (text) delta["content"] = *text;
      choice["delta"] = std::move(delta);
    } else {
      choice["text"] = text ? *text : std::string();
    }
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = finish ? json(finish) : json(nullptr);
    json out = {{"id", id},           {"object", chunk_object},        {"created", created},
                {"model", s.model_id}, {"system_fingerprint", "loom"}, {"choices", json::array({std::move(choice)})}};
    if (usage) out["usage"] = nullptr;
    return "data: " + dump(out) + "\n\n";
  };
  auto usage_chunk = [&s, id, created, chunk_object](const Job& j) {
    const json out = {{"id", id},           {"object", chunk_object},        {"created", created},
                      {"model", s.model_id}, {"system_fingerprint", "loom"}, {"choices", json::array()},
                      {"usage", usage_json(j)}};
    return "data: " + dump(out) + "\n\n";
  };
  Engine* engine = s.engine.get();
  const double timeout = s.args.timeout;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [engine, job, id, deadline, timeout, chunk, usage_chunk, chat, include_usage = p.include_usage,
       started = std::vector<bool>(std::size_t(p.n), false)](std::size_t, httplib::DataSink& sink) mutable {
        auto write = [&](const std::string& data) { return sink.write(data.data(), data.size()); };
        auto gone = [&] {  // the client is not reading any more: stop its request
          engine->cancel(*job);
          std::fprintf(stderr, "loom-server: %s: the client went away; request cancelled\n", id.c_str());
          return false;
        };
        std::vector<bool> finished(job->choices.size(), false);
        for (;;) {
          std::vector<std::pair<std::size_t, std::string>> pieces;
          std::vector<std::size_t> ended;
          bool all_done = false, timed_out = false;
          {
            std::unique_lock lock(job->m);
            auto ready = [&] {
              if (job->remaining == 0) return true;
              for (std::size_t i = 0; i < job->choices.size(); ++i)
                if (!job->choices[i].pending.empty() || (job->choices[i].done && !finished[i])) return true;
              return false;
            };
            if (deadline) {
              timed_out = !job->cv.wait_until(lock, *deadline, ready);
            } else {
              job->cv.wait(lock, ready);
            }
            for (std::size_t i = 0; i < job->choices.size(); ++i) {
              Choice& c = job->choices[i];
              if (!c.pending.empty()) pieces.emplace_back(i, std::exchange(c.pending, {}));
              if (c.done && !finished[i]) ended.push_back(i);
            }
            all_done = job->remaining == 0;
          }
          for (auto& [i, text] : pieces) {
            if (!write(chunk(i, &text, nullptr, !started[i]))) return gone();
            started[i] = true;
          }
          for (std::size_t i : ended) {
            finished[i] = true;
            if (chat && !started[i] && !write(chunk(i, nullptr, nullptr, true))) return gone();
            started[i] = true;
            if (!write(chunk(i, nullptr, finish_reason(job->choices[i]), false))) return gone();
          }
          if (all_done) {
            if (include_usage && !write(usage_chunk(*job))) return gone();
            if (!write("data: [DONE]\n\n")) return gone();
            sink.done();
            return true;
          }
          if (timed_out) {
            engine->cancel(*job);
            std::fprintf(stderr, "loom-server: %s: timed out after %g s; request cancelled\n", id.c_str(), timeout);
            write("data: " + dump(error_json(timeout_error(timeout))) + "\n\n");
            sink.done();
            return true;
          }
        }
      },
      [engine, job](bool) {
        // The response is gone (sent, or the connection failed): a request still running is not
        // wanted any more.
        bool running = false;
        {
          std::lock_guard lock(job->m);
          running = job->remaining > 0;
        }
        if (running) engine->cancel(*job);
      });
}

std::string model_name(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // a folder given with a trailing slash
  const std::string name = p.filename().string();
  return name.empty() ? path : name;
}

bool authorized(const ServerState& s, const httplib::Request& req) {
  if (s.args.api_key.empty() || req.path == "/health") return true;
  const std::string expected = "Bearer " + s.args.api_key;
  const std::string given = req.get_header_value("Authorization");
  if (given.size() != expected.size()) return false;
  unsigned diff = 0;  // compare every byte: the time does not tell how much of the key matched
  for (std::size_t i = 0; i < given.size(); ++i) diff |= unsigned(given[i] ^ expected[i]);
  return diff == 0;
}

int serve(const ServerArgs& args) {
  ServerState s;
  s.args = args;
  for (const std::string& note : args.notes) std::fprintf(stderr, "loom-server: %s\n", note.c_str());
  s.loaded = loom::load(args.model, args.tokenizer);
  if (!s.loaded.tokenizer)
    throw loom::Error(loom::ErrorKind::invalid_argument, "server", "the model carries no tokenizer: pass -z TOKENIZER");
  if (!args.chat_template.empty()) {
    s.chat_format = loom::chat_format_from_name(args.chat_template);
  } else if (s.loaded.chat_template.empty()) {
    std::fprintf(stderr, "loom-server: the model has no chat template; chat uses chatml (--chat-template NAME to change)\n");
  } else {
    try {
      s.chat_format = loom::detect_chat_format(s.loaded.chat_template);
    } catch (const loom::Error& e) {
      std::fprintf(stderr, "loom-server: %s; chat uses chatml\n", loom::cli::one_line(e.what()).c_str());
    }
  }
  s.model_id = args.alias.empty() ? model_name(args.model) : args.alias;
  s.started = std::time(nullptr);
  const std::size_t capacity = std::size_t(args.parallel) + std::size_t(args.queue);
  s.engine = std::make_unique<Engine>(*s.loaded.model, *s.loaded.tokenizer,
                                      loom::BatchOptions{.n_ctx = args.n_ctx,
                                                         .n_threads = args.threads,
                                                         .max_sequences = args.parallel,
                                                         .max_batch_tokens = std::max(512, args.parallel),
                                                         .max_memory = args.max_memory,
                                                         .kv_type = args.kv_type},
                                      capacity);

  httplib::Server svr;
  // Enough handler threads for every request that may run or wait, and a few for the rest
  // (health checks, refusals), so that a waiting request never holds up a 503 or a 4xx.
  const std::size_t threads = capacity + 8;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_payload_max_length(std::size_t(args.max_body));
  svr.set_keep_alive_timeout(2);
  svr.set_read_timeout(30);
  svr.set_write_timeout(30);

  svr.set_pre_routing_handler([&s](const httplib::Request& req, httplib::Response& res) {
    if (authorized(s, req)) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, {401, "invalid or missing API key: send 'Authorization: Bearer KEY'", "invalid_request_error", "",
                     "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  // httplib's own refusals (unknown path, body over --max-body, bad HTTP) in the same JSON shape;
  // responses the handlers wrote keep their body.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([&args](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e{res.status, "", res.status >= 500 ? "server_error" : "invalid_request_error", "", ""};
    if (res.status == 404) {
      e.message = "no endpoint " + req.method + " " + req.path;
      e.code = "not_found";
    } else if (res.status == 413) {
      e.message = "the request body is larger than the server's --max-body of " + std::to_string(args.max_body) + " bytes";
      e.code = "payload_too_large";
    } else {
      e.message = "HTTP " + std::to_string(res.status) + (res.status == 400 ? ": malformed request" : "");
    }
    send_error(res, e);
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, {500, "internal error: " + what, "server_error", "", ""});
  });

  auto completion = [&s](bool chat) {
    return [&s, chat](const httplib::Request& req, httplib::Response& res) {
      try {
        handle_completion(s, req, res, chat);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const loom::Error& e) {
        send_error(res, {400, e.what(), "invalid_request_error", "", ""});
      } catch (const std::bad_alloc&) {
        send_error(res, {500, "out of memory", "server_error", "", ""});
      }
    };
  };
  svr.Post("/v1/completions", completion(false));
  svr.Post("/v1/chat/completions", completion(true));
  svr.Post("/completions", completion(false));  // llama.cpp's aliases without /v1
  svr.Post("/chat/completions", completion(true));
  auto models = [&s](const httplib::Request&, httplib::Response& res) {
    const json out = {{"object", "list"},
                      {"data", json::array({{{"id", s.model_id},
                                             {"object", "model"},
                                             {"created", std::int64_t(s.started)},
                                             {"owned_by", "loom"}}})}};
    res.set_content(dump(out), "application/json");
  };
  svr.Get("/v1/models", models);
  svr.Get("/models", models);
  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });

  int port = args.port;
  if (port == 0) {
    port = svr.bind_to_any_port(args.host);
    if (port < 0) loom::fail(loom::ErrorKind::io, "server", "cannot listen on ", args.host, " (any port)");
  } else if (!svr.bind_to_port(args.host, port)) {
    loom::fail(loom::ErrorKind::io, "server", "cannot listen on ", args.host, ":", port,
               " (in use, or not an address of this machine)");
  }
  std::printf("loom-server: listening on http://%s:%d (model '%s', %d slots, queue %d, context %d)\n", args.host.c_str(),
              port, s.model_id.c_str(), args.parallel, args.queue, s.engine->options().n_ctx);
  std::fflush(stdout);

  // SIGINT / SIGTERM end the server: a thread waits for them (blocked in every thread).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGUSR1);
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (sig == SIGUSR1) return;  // woken to end
    std::fprintf(stderr, "loom-server: stopping\n");
    s.engine->cancel_all();
    svr.stop();
  });
  const bool ok = svr.listen_after_bind();
  s.engine->cancel_all();
  pthread_kill(signals.native_handle(), SIGUSR1);
  signals.join();
  if (!ok) std::fprintf(stderr, "loom-server: the listening socket failed\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // A client that goes away must not kill the server with SIGPIPE; the stop signals are taken
  // by one thread (serve), so every thread started from here blocks them.
  signal(SIGPIPE, SIG_IGN);
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  return loom::cli::run_tool("loom-server", [&] {
    const ServerArgs a = parse(argc, argv);
    if (a.help) {
      usage(stdout);
      return 0;
    }
    return serve(a);
  });
}
