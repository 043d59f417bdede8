// loom-server run as a client would: started on a free loopback port with the demo model (and
// the tiny-llama fixture), called over HTTP with cpp-httplib's client, and with the official
// `openai` npm package where Node and the npm registry are available.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fixtures.hpp"

#if defined(LOOM_SERVER_BIN) && defined(LOOM_HAVE_HTTPLIB)
#include <httplib.h>
#define LOOM_SERVER_TESTS 1
#endif

namespace test_server {

#ifndef LOOM_GENERATE_BIN
#define LOOM_GENERATE_BIN ""
#endif

#ifndef LOOM_SERVER_TESTS
TEST(Server, NotBuilt) {
  GTEST_SKIP() << "loom-server was not built: cpp-httplib (Debian libcpp-httplib-dev) was not found when the build "
                  "was configured";
}
#else

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

fs::path demo_model() { return fs::path(LOOM_SOURCE_DIR) / "models" / "tiny-shakespeare"; }

std::string quote(const std::string& s) { return "'" + s + "'"; }

/// Runs a shell command; returns {exit status, stdout}.
std::pair<int, std::string> sh(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, out};
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

/// A loom-server process on a free loopback port (--port 0; the port is read from the line it
/// prints), stopped with SIGTERM when destroyed. Its stderr goes to a file the test can read.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args) {
    static int count = 0;
    log_ = fs::temp_directory_path() / ("loom_test_server_" + std::to_string(::getpid()) + "_" + std::to_string(count++) + ".log");
    args.insert(args.begin(), LOOM_SERVER_BIN);
    args.insert(args.end(), {"--port", "0"});
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      FILE* err = std::fopen(log_.c_str(), "w");
      if (err) dup2(fileno(err), 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    // The first line of stdout: "loom-server: listening on http://HOST:PORT (...)".
    std::string line;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < until) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char c[256];
      const ssize_t n = read(out[0], c, sizeof c);
      if (n <= 0) break;
      line.append(c, std::size_t(n));
    }
    close(out[0]);
    const auto at = line.find("http://127.0.0.1:");
    if (at != std::string::npos) port_ = std::atoi(line.c_str() + at + 17);
  }
  ~ServerProcess() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int st = 0;
    for (int i = 0; i < 100 && waitpid(pid_, &st, WNOHANG) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (waitpid(pid_, &st, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    fs::remove(log_, ec);
  }
  int port() const { return port_; }
  bool alive() const { return pid_ > 0 && kill(pid_, 0) == 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }
  std::string log() const { return loom::test::read_text(log_); }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(60, 0);
    c->set_connection_timeout(10, 0);
    return c;
  }

 private:
  pid_t pid_ = -1;
  int port_ = -1;
  fs::path log_;
};

struct Reply {
  int status = -1;
  std::string body;
  json j;  // the body as JSON (non-streamed), or null
};

Reply post(const ServerProcess& s, const std::string& path, const std::string& body, httplib::Headers headers = {}) {
  Reply r;
  const auto res = s.client()->Post(path.c_str(), headers, body, "application/json");
  if (!res) return r;
  r.status = res->status;
  r.body = res->body;
  r.j = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  return r;
}
Reply post(const ServerProcess& s, const std::string& path, const json& body) { return post(s, path, body.dump()); }

/// The events of a server-sent-events body: each `data: ...` payload, parsed; `done` when the
/// last one is [DONE].
struct Events {
  std::vector<json> chunks;
  bool done = false;
};
Events parse_sse(const std::string& body) {
  Events e;
  std::size_t at = 0;
  while (at < body.size()) {
    const std::size_t end = body.find("\n\n", at);
    const std::string event = body.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? body.size() : end + 2;
    if (event.rfind("data: ", 0) != 0) continue;
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      e.done = true;
      continue;
    }
    e.chunks.push_back(json::parse(data, nullptr, false));
  }
  return e;
}

/// The text of choice 0 in a streamed reply (chat deltas or completion texts).
std::string streamed_text(const Events& e, int index = 0) {
  std::string text;
  for (const json& c : e.chunks)
    if (c.contains("choices"))
      for (const json& ch : c["choices"])
        if (ch["index"] == index) {
          if (ch.contains("delta") && ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
          if (ch.contains("text")) text += ch["text"].get<std::string>();
        }
  return text;
}

/// generate's greedy text for `prompt` (what the server must return for temperature 0).
std::string generate_text(const std::string& prompt, int n) {
  const std::string gen = LOOM_GENERATE_BIN;
  const auto [status, out] = sh(gen + " -m " + quote(demo_model().string()) + " -p " + quote(prompt) + " -n " +
                                std::to_string(n) + " --temp 0 --no-display-prompt 2>/dev/null");
  EXPECT_EQ(status, 0) << prompt;
  return out.empty() ? out : out.substr(0, out.size() - 1);  // generate ends its text with a newline
}

/// The server every test shares: the demo model, 4 slots.
class Server : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    signal(SIGPIPE, SIG_IGN);
    server_ = new ServerProcess({"-m", demo_model().string(), "--parallel", "4", "--queue", "32", "--max-body", "64K"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_GT(server_->port(), 0) << "loom-server did not start:\n" << server_->log();
    ASSERT_TRUE(std::string(LOOM_GENERATE_BIN).size()) << "generate was not built";
  }
  static ServerProcess* server_;
};
ServerProcess* Server::server_ = nullptr;

TEST_F(Server, HealthAndModels) {
  auto c = server_->client();
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto m = c->Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  const json j = json::parse(m->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "tiny-shakespeare");
  EXPECT_EQ(j["data"][0]["object"], "model");
}

// Greedy completions are generate's text, streamed or not, with OpenAI's fields and usage.
TEST_F(Server, CompletionsMatchGenerateStreamedAndNot) {
  const std::string expected = generate_text("ROMEO:", 16);
  const Reply r = post(*server_, "/v1/completions", json{{"model", "tiny-shakespeare"}, {"prompt", "ROMEO:"}, {"max_tokens", 16}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j["object"], "text_completion");
  EXPECT_EQ(r.j["model"], "tiny-shakespeare");
  ASSERT_EQ(r.j["choices"].size(), 1u);
  EXPECT_EQ(r.j["choices"][0]["text"], expected);
  EXPECT_EQ(r.j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r.j["usage"]["completion_tokens"], 16);
  EXPECT_EQ(r.j["usage"]["total_tokens"], r.j["usage"]["prompt_tokens"].get<int>() + 16);

  const Reply s = post(*server_, "/v1/completions",
                       json{{"prompt", "ROMEO:"}, {"max_tokens", 16}, {"temperature", 0}, {"stream", true},
                            {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(s.status, 200) << s.body;
  const Events e = parse_sse(s.body);
  EXPECT_TRUE(e.done);
  ASSERT_GE(e.chunks.size(), 3u);
  EXPECT_EQ(streamed_text(e), expected);
  for (const json& c : e.chunks) EXPECT_EQ(c["object"], "text_completion");
  const json& last = e.chunks.back();  // the usage chunk: no choices
  EXPECT_TRUE(last["choices"].empty());
  EXPECT_EQ(last["usage"], r.j["usage"]);
  EXPECT_EQ(e.chunks[e.chunks.size() - 2]["choices"][0]["finish_reason"], "length");
}

// Chat through the template: the streamed deltas add up to the non-streamed message.
TEST_F(Server, ChatCompletionsStreamedAndNot) {
  const json body = {{"model", "tiny-shakespeare"},
                     {"messages", {{{"role", "system"}, {"content", "Speak in verse."}}, {{"role", "user"}, {"content", "Hello there"}}}},
                     {"max_tokens", 12},
                     {"temperature", 0}};
  const Reply r = post(*server_, "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j["object"], "chat.completion");
  const json& msg = r.j["choices"][0]["message"];
  EXPECT_EQ(msg["role"], "assistant");
  ASSERT_TRUE(msg["content"].is_string());
  EXPECT_FALSE(msg["content"].get<std::string>().empty());
  EXPECT_EQ(r.j["usage"]["completion_tokens"], 12);
  // The chatml text the template gives, as a completion, is the same request.
  const Reply same = post(*server_, "/v1/completions",
                          json{{"prompt", "<|im_start|>system\nSpeak in verse.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"},
                               {"max_tokens", 12}, {"temperature", 0}});
  EXPECT_EQ(same.j["choices"][0]["text"], msg["content"]);
  EXPECT_EQ(same.j["usage"]["prompt_tokens"], r.j["usage"]["prompt_tokens"]);

  json streamed = body;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  const Reply s = post(*server_, "/v1/chat/completions", streamed);
  ASSERT_EQ(s.status, 200) << s.body;
  const Events e = parse_sse(s.body);
  EXPECT_TRUE(e.done);
  ASSERT_GE(e.chunks.size(), 3u);
  EXPECT_EQ(e.chunks[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(e.chunks[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(streamed_text(e), msg["content"]);
  EXPECT_EQ(e.chunks.back()["usage"], r.j["usage"]);
  for (std::size_t i = 0; i + 1 < e.chunks.size(); ++i) EXPECT_TRUE(e.chunks[i]["usage"].is_null());
}

// A given seed repeats a sampled reply; n continuations use seed + i.
TEST_F(Server, SeedReproducesAndNUsesSeedPlusIndex) {
  auto sample = [&](std::uint64_t seed, int n) {
    const Reply r = post(*server_, "/v1/completions",
                         json{{"prompt", "JULIET:"}, {"max_tokens", 16}, {"temperature", 1.0}, {"top_k", 0}, {"top_p", 1.0},
                              {"min_p", 0.0}, {"seed", seed}, {"n", n}});
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<std::string> texts;
    for (const json& c : r.j["choices"]) texts.push_back(c["text"]);
    return texts;
  };
  const auto a = sample(42, 1), b = sample(42, 1), c = sample(43, 1), both = sample(42, 2);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0], a[0]);
  EXPECT_EQ(both[1], c[0]);
}

// A stop string ends the text just before it (text-level, across tokens) with finish_reason stop.
TEST_F(Server, StopStrings) {
  const Reply full = post(*server_, "/v1/completions", json{{"prompt", "ROMEO:"}, {"max_tokens", 40}, {"temperature", 0}});
  ASSERT_EQ(full.status, 200);
  const std::string text = full.j["choices"][0]["text"];
  ASSERT_GT(text.size(), 20u) << text;
  const std::string stop = text.substr(10, 3);  // likely spans a token boundary
  for (const json& s : {json(stop), json::array({"@@never@@", stop})}) {
    const Reply r = post(*server_, "/v1/completions", json{{"prompt", "ROMEO:"}, {"max_tokens", 40}, {"temperature", 0}, {"stop", s}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.j["choices"][0]["text"], text.substr(0, text.find(stop))) << s;
    EXPECT_EQ(r.j["choices"][0]["finish_reason"], "stop");
    const Reply st = post(*server_, "/v1/completions",
                          json{{"prompt", "ROMEO:"}, {"max_tokens", 40}, {"temperature", 0}, {"stop", s}, {"stream", true}});
    const Events e = parse_sse(st.body);
    EXPECT_EQ(streamed_text(e), text.substr(0, text.find(stop)));
    EXPECT_EQ(e.chunks.back()["choices"][0]["finish_reason"], "stop");
  }
}

// 16 clients at once (4 slots, the rest queued), half streaming: each gets generate's text for
// its own prompt.
TEST_F(Server, SixteenConcurrentClientsGetTheirOwnGreedyText) {
  const std::vector<std::string> prompts = {"ROMEO:", "JULIET:", "KING HENRY:", "First Citizen:", "MENENIUS:", "HAMLET:",
                                            "O, what", "The king", "My lord,", "Good night", "Thou art", "What say you",
                                            "CORIOLANUS:", "Enter the", "I pray you", "Now is the"};
  std::vector<std::string> expected;
  for (const auto& p : prompts) expected.push_back(generate_text(p, 12));
  std::vector<std::string> got(prompts.size());
  std::vector<int> status(prompts.size(), -1);
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < prompts.size(); ++i)
    clients.emplace_back([&, i] {
      const bool stream = i % 2 == 1;
      const Reply r = post(*server_, "/v1/completions",
                           json{{"prompt", prompts[i]}, {"max_tokens", 12}, {"temperature", 0}, {"stream", stream}});
      status[i] = r.status;
      got[i] = stream ? streamed_text(parse_sse(r.body)) : r.j["choices"][0]["text"].get<std::string>();
    });
  for (auto& t : clients) t.join();
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(status[i], 200) << prompts[i];
    EXPECT_EQ(got[i], expected[i]) << prompts[i];
  }
}

/// Opens a raw connection, sends a streaming request, reads until the first event and closes.
bool read_first_event_and_hang_up(int port, const std::string& body) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  ok = ok && send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size());
  std::string got;
  char buf[512];
  while (ok && got.find("data: ") == std::string::npos) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, std::size_t(n));
  }
  close(fd);
  return got.find("data: ") != std::string::npos;
}

// Clients that hang up mid-stream: their requests are cancelled, the server keeps serving.
TEST_F(Server, ClientThatDisconnectsMidStreamIsCancelled) {
  const std::string body = json{{"prompt", "ROMEO:"}, {"max_tokens", 240}, {"ignore_eos", true}, {"stream", true}}.dump();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(read_first_event_and_hang_up(server_->port(), body));
  const Reply r = post(*server_, "/v1/completions", json{{"prompt", "ROMEO:"}, {"max_tokens", 8}, {"temperature", 0}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.j["choices"][0]["text"], generate_text("ROMEO:", 8));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (server_->log().find("the client went away") == std::string::npos && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(server_->log().find("the client went away; request cancelled"), std::string::npos) << server_->log();
  EXPECT_TRUE(server_->alive());
}

// Every kind of bad request gets a 4xx in OpenAI's error shape, while a good request running
// beside them completes with the right text; the server keeps running.
TEST_F(Server, BadRequestsGet4xxWhileAGoodOneCompletes) {
  const std::string expected = generate_text("ROMEO:", 48);
  Reply good;
  std::thread runner([&] {
    good = post(*server_, "/v1/completions", json{{"prompt", "ROMEO:"}, {"max_tokens", 48}, {"temperature", 0}, {"stream", true}});
  });
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += "ROMEO and JULIET ";
  const json user = {{"role", "user"}, {"content", "Hi"}};
  struct Bad {
    const char* what;
    std::string path, body;
    int status;
  };
  const std::vector<Bad> bad = {
      {"malformed JSON", "/v1/completions", "{\"prompt\": ", 400},
      {"not an object", "/v1/completions", "[1, 2]", 400},
      {"no prompt", "/v1/completions", json{{"max_tokens", 4}}.dump(), 400},
      {"prompt of the wrong type", "/v1/completions", json{{"prompt", 5}}.dump(), 400},
      {"max_tokens a string", "/v1/completions", json{{"prompt", "a"}, {"max_tokens", "ten"}}.dump(), 400},
      {"max_tokens 0", "/v1/completions", json{{"prompt", "a"}, {"max_tokens", 0}}.dump(), 400},
      {"max_tokens a fraction", "/v1/completions", json{{"prompt", "a"}, {"max_tokens", 2.5}}.dump(), 400},
      {"temperature negative", "/v1/completions", json{{"prompt", "a"}, {"temperature", -1}}.dump(), 400},
      {"temperature a string", "/v1/completions", json{{"prompt", "a"}, {"temperature", "hot"}}.dump(), 400},
      {"top_p above 1", "/v1/completions", json{{"prompt", "a"}, {"top_p", 1.5}}.dump(), 400},
      {"n above --parallel", "/v1/completions", json{{"prompt", "a"}, {"n", 99}}.dump(), 400},
      {"stop of the wrong type", "/v1/completions", json{{"prompt", "a"}, {"stop", 5}}.dump(), 400},
      {"too many stop strings", "/v1/completions", json{{"prompt", "a"}, {"stop", std::vector<std::string>(20, "x")}}.dump(), 400},
      {"negative seed", "/v1/completions", json{{"prompt", "a"}, {"seed", -5}}.dump(), 400},
      {"stream not a boolean", "/v1/completions", json{{"prompt", "a"}, {"stream", "yes"}}.dump(), 400},
      {"token id outside the vocabulary", "/v1/completions", json{{"prompt", {99999}}}.dump(), 400},
      {"unknown model", "/v1/completions", json{{"model", "gpt-17"}, {"prompt", "a"}}.dump(), 404},
      {"prompt over the context", "/v1/completions", json{{"prompt", long_prompt}}.dump(), 400},
      {"body over --max-body", "/v1/completions", json{{"prompt", std::string(100000, 'a')}}.dump(), 413},
      {"logprobs", "/v1/completions", json{{"prompt", "a"}, {"logprobs", true}}.dump(), 400},
      {"chat without messages", "/v1/chat/completions", json{{"max_tokens", 4}}.dump(), 400},
      {"messages not an array", "/v1/chat/completions", json{{"messages", "Hi"}}.dump(), 400},
      {"unknown role", "/v1/chat/completions", json{{"messages", {{{"role", "wizard"}, {"content", "Hi"}}}}}.dump(), 400},
      {"content of the wrong type", "/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", 7}}}}}.dump(), 400},
      {"chat prompt over the context", "/v1/chat/completions",
       json{{"messages", {{{"role", "user"}, {"content", long_prompt}}}}}.dump(), 400},
      {"unknown endpoint", "/v1/embeddings", json{{"input", "a"}}.dump(), 404},
  };
  EXPECT_GE(bad.size(), 20u);
  for (const Bad& b : bad) {
    const Reply r = post(*server_, b.path, b.body);
    EXPECT_EQ(r.status, b.status) << b.what << ": " << r.body;
    ASSERT_TRUE(r.j.is_object() && r.j.contains("error")) << b.what << ": " << r.body;
    const json& e = r.j["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << b.what;
    EXPECT_TRUE(e["type"].is_string()) << b.what;
    EXPECT_TRUE(e.contains("param") && e.contains("code")) << b.what;
  }
  runner.join();
  ASSERT_EQ(good.status, 200);
  const Events e = parse_sse(good.body);
  EXPECT_TRUE(e.done);
  EXPECT_EQ(streamed_text(e), expected);
  EXPECT_TRUE(server_->alive());
  EXPECT_EQ(post(*server_, "/v1/completions", json{{"prompt", "a"}, {"max_tokens", 2}}).status, 200);
}

// --api-key: every endpoint but /health needs the key; --parallel 1 --queue 0: a second request
// while one runs gets 503.
TEST(ServerOptions, ApiKeyAndFullQueue) {
  signal(SIGPIPE, SIG_IGN);
  ServerProcess s({"-m", demo_model().string(), "--api-key", "sekrit", "--parallel", "1", "--queue", "0"});
  ASSERT_GT(s.port(), 0) << s.log();
  const std::string body = json{{"prompt", "ROMEO:"}, {"max_tokens", 4}}.dump();
  const Reply none = post(s, "/v1/completions", body);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.j["error"]["code"], "invalid_api_key");
  EXPECT_EQ(post(s, "/v1/completions", body, {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(post(s, "/v1/completions", body, {{"Authorization", "Bearer sekrit"}}).status, 200);
  EXPECT_EQ(s.client()->Get("/v1/models")->status, 401);
  EXPECT_EQ(s.client()->Get("/v1/models", {{"Authorization", "Bearer sekrit"}})->status, 200);
  EXPECT_EQ(s.client()->Get("/health")->status, 200);

  // One slot, no queue: while a long request streams, another is refused with 503.
  std::atomic<bool> started{false}, refused{false};
  std::atomic<int> second_status{-1};
  const std::string long_body = json{{"prompt", "ROMEO:"}, {"max_tokens", 250}, {"ignore_eos", true}, {"stream", true}}.dump();
  std::thread first([&] {
    httplib::Client c1("127.0.0.1", s.port());
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.headers = {{"Authorization", "Bearer sekrit"}, {"Content-Type", "application/json"}};
    req.body = long_body;
    req.content_receiver = [&](const char*, std::size_t, std::uint64_t, std::uint64_t) {
      started = true;
      return !refused;  // hang up once the second request was refused
    };
    c1.send(req);
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const Reply second = post(s, "/v1/completions", body, {{"Authorization", "Bearer sekrit"}});
  second_status = second.status;
  refused = true;
  first.join();
  EXPECT_EQ(second_status, 503) << second.body;
  if (second.status == 503) {
    EXPECT_EQ(second.j["error"]["code"], "server_busy");
  }
  EXPECT_TRUE(s.alive());
}

// --timeout: a request that takes longer is cancelled and answered 504 (streamed: an error event).
TEST(ServerOptions, Timeout) {
  ServerProcess s({"-m", demo_model().string(), "--timeout", "0.001"});
  ASSERT_GT(s.port(), 0) << s.log();
  const Reply r = post(s, "/v1/completions", json{{"prompt", "ROMEO:"}, {"max_tokens", 240}, {"ignore_eos", true}});
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(r.j["error"]["code"], "timeout");
  const Reply st = post(s, "/v1/completions", json{{"prompt", "ROMEO:"}, {"max_tokens", 240}, {"ignore_eos", true}, {"stream", true}});
  const Events e = parse_sse(st.body);
  ASSERT_FALSE(e.chunks.empty());
  EXPECT_EQ(e.chunks.back()["error"]["code"], "timeout");
  EXPECT_TRUE(s.alive());
}

// Flags follow generate's rule: a bad flag or value exits 2 with one line, a bad model 1.
TEST(ServerOptions, BadFlagsExit2) {
  const std::string bin = LOOM_SERVER_BIN, m = " -m " + quote(demo_model().string());
  EXPECT_EQ(sh(bin + " 2>/dev/null").first, 2);  // no -m
  EXPECT_EQ(sh(bin + m + " --bogus 2>/dev/null").first, 2);
  EXPECT_EQ(sh(bin + m + " --port 70000 2>/dev/null").first, 2);
  EXPECT_EQ(sh(bin + m + " --parallel 0 2>/dev/null").first, 2);
  EXPECT_EQ(sh(bin + m + " --timeout -1 2>/dev/null").first, 2);
  EXPECT_EQ(sh(bin + m + " --chat-template vicuna 2>/dev/null").first, 2);
  EXPECT_EQ(sh(bin + m + " --api-key 2>/dev/null").first, 2);
  EXPECT_EQ(sh(bin + " -m /nonexistent/model 2>/dev/null").first, 1);
  EXPECT_EQ(sh(bin + " -h").first, 0);
}

// A Hugging Face fixture (SentencePiece tokenizer, another architecture's shapes) serves too.
TEST(ServerOptions, TinyLlamaFixture) {
  LOOM_REQUIRE_FIXTURE(model, "tiny-models/tiny-llama/tiny-llama.gguf");
  ServerProcess s({"-m", model.string(), "--parallel", "2"});
  ASSERT_GT(s.port(), 0) << s.log();
  const Reply r = post(s, "/v1/completions", json{{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string gen = LOOM_GENERATE_BIN;
  const auto [status, out] = sh(gen + " -m " + quote(model.string()) + " -p 'Once upon a time' -n 8 --temp 0 --no-display-prompt 2>/dev/null");
  ASSERT_EQ(status, 0);
  EXPECT_EQ(r.j["choices"][0]["text"], out.substr(0, out.size() - 1));
  const Reply c = post(s, "/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4}});
  EXPECT_EQ(c.status, 200) << c.body;
}

// The official `openai` npm package, unmodified, streams a chat completion from the server.
TEST_F(Server, OfficialOpenAiNodeClientStreamsAChat) {
  if (sh("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1").first != 0)
    GTEST_SKIP() << "node and npm are not both on PATH";
  const fs::path dir = fs::temp_directory_path() / ("loom_test_server_npm_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  struct Cleanup {
    fs::path d;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  } cleanup{dir};
  const auto [install_status, install_out] =
      sh("cd " + quote(dir.string()) + " && npm init -y >/dev/null 2>&1 && npm install --no-audit --no-fund --silent openai 2>&1");
  if (install_status != 0) GTEST_SKIP() << "npm install openai failed (no registry?): " << install_out.substr(0, 400);
  std::ofstream(dir / "chat.mjs") << R"(import OpenAI from 'openai';
const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'not-needed' });
const stream = await client.chat.completions.create({
  model: 'tiny-shakespeare', messages: [{ role: 'user', content: 'Hello there' }],
  max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
let text = '', finish = null, usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  if (chunk.choices.length) { text += chunk.choices[0].delta.content ?? ''; finish = chunk.choices[0].finish_reason ?? finish; }
  if (chunk.usage) usage = chunk.usage;
}
console.log(JSON.stringify({ text, finish, usage, chunks }));
)";
  const std::string url = "http://127.0.0.1:" + std::to_string(server_->port()) + "/v1";
  const auto [status, out] = sh("cd " + quote(dir.string()) + " && node chat.mjs " + quote(url) + " 2>&1");
  ASSERT_EQ(status, 0) << out;
  const json got = json::parse(out, nullptr, false);
  ASSERT_TRUE(got.is_object()) << out;
  const Reply ref = post(*server_, "/v1/chat/completions",
                         json{{"messages", {{{"role", "user"}, {"content", "Hello there"}}}}, {"max_tokens", 12}, {"temperature", 0}});
  EXPECT_EQ(got["text"], ref.j["choices"][0]["message"]["content"]);
  EXPECT_EQ(got["finish"], "length");
  EXPECT_EQ(got["usage"]["completion_tokens"], 12);
  EXPECT_GE(got["chunks"].get<int>(), 3);
}

}  // namespace

#endif

}  // namespace test_server
