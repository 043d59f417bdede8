// A program consuming loom as an outside project would: builds a tiny model in memory (no files
// needed), generates a few tokens greedily, and checks the result is deterministic.
#include <cstdio>
#include <loom/loom.hpp>
#include <memory>
#include <vector>

int main() {
  loom::Config c;
  c.vocab_size = 16;
  c.dim = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.ffn_dim = 12;
  c.max_seq_len = 32;
  c.tied_embeddings = true;

  auto store = std::make_shared<std::vector<float>>();
  store->reserve(4096);
  auto tensor = [&](loom::Shape s) {
    const std::size_t at = store->size();
    for (std::int64_t i = 0; i < s.numel(); ++i) store->push_back(float((at + std::size_t(i)) % 7) * 0.1f - 0.3f);
    return loom::TensorRef{loom::DType::f32, s, reinterpret_cast<const std::byte*>(store->data() + at),
                           std::uint64_t(s.numel()) * 4};
  };
  loom::Weights w;
  w.token_embedding = tensor({16, 8});
  loom::LayerWeights l;
  l.attn_norm.weight = tensor({8});
  l.wq.weight = tensor({8, 8});
  l.wk.weight = tensor({4, 8});
  l.wv.weight = tensor({4, 8});
  l.wo.weight = tensor({8, 8});
  l.ffn_norm.weight = tensor({8});
  l.w_gate.weight = tensor({12, 8});
  l.w_up.weight = tensor({12, 8});
  l.w_down.weight = tensor({8, 12});
  w.layers.push_back(l);
  w.final_norm.weight = tensor({8});
  w.output.weight = w.token_embedding;
  w.storage.push_back(store);

  const loom::Model model(c, std::move(w));
  std::vector<std::int32_t> runs[2];
  for (auto& out : runs) {
    loom::Session session(model, {.n_ctx = 32});
    loom::GenerateParams p;
    p.sampler.temperature = 0.0f;
    p.max_new_tokens = 8;
    const std::vector<std::int32_t> prompt{1, 2, 3};
    session.generate(prompt, p, [&](std::int32_t id) {
      out.push_back(id);
      return true;
    });
  }
  for (std::int32_t id : runs[0]) std::printf("%d ", id);
  std::printf("\n");
  return runs[0].size() == 8 && runs[0] == runs[1] ? 0 : 1;
}
