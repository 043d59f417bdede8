#!/usr/bin/env python3
"""Trains loom's demo model: a small LLaMA-style language model on Tiny Shakespeare.

    python3 tools/train_demo.py [--corpus ../shared/corpora/tinyshakespeare/input.txt]
                                [--out models/tiny-shakespeare] [--steps N] [--threads 2]

Dependencies: the Python standard library and PyTorch (Debian's python3-torch, CPU). Nothing is
downloaded. The script

1. splits the corpus: training = bytes [0, i] and validation = bytes [i+1, end), where i is the
   position of the first newline at or after byte floor(0.9 * size) (the newline ends the
   training split), as ../shared/corpora/README.md prescribes;
2. trains a byte-level BPE tokenizer on the training split (GPT-2's pre-tokenization regex,
   256 byte tokens + 767 merges + `<|endoftext|>` = 1024 tokens) and writes it as a Hugging Face
   tokenizer.json (model BPE, ByteLevel pre-tokenizer and decoder);
3. trains a LLaMA-style decoder (RMSNorm, RoPE in Hugging Face's half-split "rotate_half"
   layout, SwiGLU, grouped-query attention, tied embeddings) on random windows of the training
   tokens;
4. evaluates the validation loss (see `evaluate`) with the weights rounded to float16, exactly as
   exported, and exports a Hugging Face LlamaForCausalLM folder: config.json,
   model.safetensors (F16, written here with struct + json), tokenizer.json,
   tokenizer_config.json, generation_config.json, eval.json and README.md.

Validation method (what eval.json records and tests/test_demo_model.cpp re-measures with loom):
the validation split is tokenized as one text (no BOS, no special tokens) into ids t[0..N).
It is cut into consecutive, non-overlapping windows of n_ctx = 256 tokens, t[k*256 ..
k*256+256) (the last window may be shorter). In each window every token after the first is
predicted from the tokens before it in the same window; the first token of each window is
context only. The loss is the mean natural-log cross-entropy over all predicted tokens (double
precision accumulation): N - ceil(N / 256) predictions in total. This equals Hugging Face's
strided perplexity with stride = n_ctx, and `perplexity --stride 256 -c 256` in loom.
eval.json also records the sum of the losses and the number of predictions for every window,
so a test can check any prefix of whole windows.
"""

import argparse
import json
import math
import os
import re
import struct
import sys
import time
from collections import defaultdict

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# Corpus split
# --------------------------------------------------------------------------------------------


def split_corpus(text):
    """Training = text[:i+1], validation = text[i+1:], i = first newline at or after 90 %."""
    i = text.index("\n", len(text) * 9 // 10)
    return text[: i + 1], text[i + 1 :]


# --------------------------------------------------------------------------------------------
# Byte-level BPE tokenizer
# --------------------------------------------------------------------------------------------

# GPT-2's split regex as tokenizer.json's ByteLevel pre-tokenizer applies it:
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# Python's `re` has no \p{..}; for ASCII text (checked below) [^\W\d_] is \p{L}, \d is \p{N}
# and (?:[^\s\w]|_) is [^\s\p{L}\p{N}], so this pattern splits exactly as GPT-2's does.
SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
EOT = "<|endoftext|>"


def bytes_to_unicode():
    """GPT-2's byte → printable character table (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHAR = bytes_to_unicode()


def words_of(text):
    return SPLIT.findall(text)


def train_bpe(text, n_merges):
    """Learns `n_merges` merges on the words of `text`. Token ids: byte b is id b; merge r
    creates id 256 + r. Ties between equally frequent pairs go to the smallest (left, right)
    id pair, so the result is deterministic."""
    counts = defaultdict(int)
    for w in words_of(text):
        counts[w] += 1
    words = [list(w.encode("utf-8")) for w in counts]  # symbol sequences (ids)
    freq = [counts[w] for w in counts]
    pair_count = defaultdict(int)
    where = defaultdict(set)  # pair -> indices of words containing it
    for wi, syms in enumerate(words):
        for a, b in zip(syms, syms[1:]):
            pair_count[(a, b)] += freq[wi]
            where[(a, b)].add(wi)
    merges = []
    for r in range(n_merges):
        if not pair_count:
            break
        best = max(pair_count.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))[0]
        if pair_count[best] < 2:
            break
        new_id = 256 + r
        merges.append(best)
        for wi in list(where[best]):
            syms = words[wi]
            f = freq[wi]
            for a, b in zip(syms, syms[1:]):  # remove this word's old pairs
                pair_count[(a, b)] -= f
                if pair_count[(a, b)] == 0:
                    del pair_count[(a, b)]
                where[(a, b)].discard(wi)
            out, k = [], 0
            while k < len(syms):
                if k + 1 < len(syms) and syms[k] == best[0] and syms[k + 1] == best[1]:
                    out.append(new_id)
                    k += 2
                else:
                    out.append(syms[k])
                    k += 1
            words[wi] = out
            for a, b in zip(out, out[1:]):
                pair_count[(a, b)] += f
                where[(a, b)].add(wi)
        where.pop(best, None)
    return merges


class Bpe:
    """Encoder/decoder for the learned merges (rank = merge index, lowest first, as HF BPE)."""

    def __init__(self, merges):
        self.merges = merges
        self.rank = {p: r for r, p in enumerate(merges)}
        self.id_of_pair = {p: 256 + r for r, p in enumerate(merges)}
        self.bytes_of = [bytes([b]) for b in range(256)] + [None] * len(merges)
        for r, (a, b) in enumerate(merges):
            self.bytes_of[256 + r] = self.bytes_of[a] + self.bytes_of[b]
        self.eot_id = 256 + len(merges)
        self.vocab_size = self.eot_id + 1
        self.cache = {}

    def piece(self, i):
        if i == self.eot_id:
            return EOT
        return "".join(BYTE_CHAR[b] for b in self.bytes_of[i])

    def encode_word(self, w):
        ids = self.cache.get(w)
        if ids is not None:
            return ids
        syms = list(w.encode("utf-8"))
        while len(syms) > 1:
            best, pos = None, -1
            for k in range(len(syms) - 1):
                r = self.rank.get((syms[k], syms[k + 1]))
                if r is not None and (best is None or r < best):
                    best, pos = r, k
            if best is None:
                break
            syms[pos : pos + 2] = [256 + best]
        self.cache[w] = syms
        return syms

    def encode(self, text):
        out = []
        for w in words_of(text):
            out.extend(self.encode_word(w))
        return out

    def decode(self, ids):
        return b"".join(EOT.encode() if i == self.eot_id else self.bytes_of[i] for i in ids).decode("utf-8", "replace")

    def tokenizer_json(self):
        vocab = {self.piece(i): i for i in range(self.eot_id)}
        vocab[EOT] = self.eot_id
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": self.eot_id, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": vocab,
                "merges": [self.piece(a) + " " + self.piece(b) for a, b in self.merges],
            },
        }


# --------------------------------------------------------------------------------------------
# Model (the computation of transformers' LlamaForCausalLM)
# --------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Rope(nn.Module):
    def __init__(self, head_dim, max_pos, theta):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x):  # x: [B, H, T, hd]
        t = x.shape[2]
        return x * self.cos[:t] + rotate_half(x) * self.sin[:t]


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kvh, self.hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        d = c["hidden_size"]
        self.q_proj = nn.Linear(d, self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.kvh * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.kvh * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, d, bias=False)

    def forward(self, x, rope, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kvh, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kvh, self.hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        rep = self.h // self.kvh  # transformers' repeat_kv: kv head j serves q heads j*rep .. j*rep+rep-1
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hd)
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.h * self.hd)
        return self.o_proj(y)


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = Mlp(c)

    def forward(self, x, rope, mask):
        x = x + self.self_attn(self.input_layernorm(x), rope, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    """Parameter names are transformers' (model.layers.0.self_attn.q_proj.weight, ...); the
    output projection is tied to model.embed_tokens."""

    def __init__(self, c):
        super().__init__()
        self.model = Backbone(c)
        n = c["max_position_embeddings"]
        self.rope = Rope(c["head_dim"], n, c["rope_theta"])
        self.register_buffer("mask", torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1), persistent=False)
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * c["num_hidden_layers"]) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, mean=0.0, std=s)

    def forward(self, idx):
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, self.rope, self.mask)
        x = self.model.norm(x)
        return x @ self.model.embed_tokens.weight.t()


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, ids, n_ctx, batch=16):
    """Non-overlapping windows of n_ctx tokens; in each, every token after the first is scored.
    Returns (mean loss, per-window [sum of losses, count]) with float64 accumulation."""
    model.eval()
    windows = [ids[s : s + n_ctx] for s in range(0, len(ids), n_ctx)]
    windows = [w for w in windows if len(w) >= 2]
    per_window = [None] * len(windows)

    def score(indices):
        x = torch.tensor([windows[i] for i in indices], dtype=torch.long)
        logp = model(x).double().log_softmax(-1)
        nll = -logp[:, :-1].gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)
        for j, i in enumerate(indices):
            per_window[i] = (float(nll[j].sum()), len(windows[i]) - 1)

    full = [i for i, w in enumerate(windows) if len(w) == n_ctx]
    for k in range(0, len(full), batch):
        score(full[k : k + batch])
    for i, w in enumerate(windows):
        if len(w) != n_ctx:
            score([i])
    model.train()
    total = sum(s for s, _ in per_window)
    count = sum(n for _, n in per_window)
    return total / count, per_window


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def tensor_bytes_f16(t):
    """float16 little-endian bytes without numpy (python3-torch may come without it)."""
    t = t.detach().contiguous().to(torch.float16).flatten()
    return struct.pack("<%de" % t.numel(), *t.float().tolist())


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor), written as F16. Layout: u64 little-endian header length,
    the JSON header padded with spaces to a multiple of 8, then the tensor bytes in order."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, t in tensors:
        data = tensor_bytes_f16(t)
        header[name] = {"dtype": "F16", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=os.path.join(root, "..", "shared", "corpora", "tinyshakespeare", "input.txt"))
    ap.add_argument("--out", default=os.path.join(root, "models", "tiny-shakespeare"))
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=25)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    log = lambda *a: print(*a, flush=True)

    with open(args.corpus, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    if any(ord(ch) >= 128 for ch in text):
        sys.exit("train_demo.py: the corpus is not ASCII; the Python pre-tokenizer is exact only for ASCII")
    train_text, val_text = split_corpus(text)
    log(f"corpus: {len(raw)} bytes; train {len(train_text)} bytes, validation {len(val_text)} bytes")

    # Tokenizer.
    t0 = time.time()
    merges = train_bpe(train_text, args.vocab - 256 - 1)
    bpe = Bpe(merges)
    train_ids = bpe.encode(train_text)
    val_ids = bpe.encode(val_text)
    assert bpe.decode(train_ids) == train_text and bpe.decode(val_ids) == val_text
    log(f"tokenizer: {bpe.vocab_size} tokens ({len(merges)} merges) in {time.time() - t0:.1f} s; "
        f"train {len(train_ids)} tokens ({len(train_text) / len(train_ids):.2f} bytes/token), validation {len(val_ids)} tokens")

    cfg = {
        "vocab_size": bpe.vocab_size,
        "hidden_size": args.dim,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.dim // args.heads,
        "intermediate_size": args.ffn,
        "max_position_embeddings": args.ctx,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
    }
    model = Llama(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters, config {cfg}")

    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, p)))

    data = torch.tensor(train_ids, dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    n_steps = args.bench or args.steps
    t_train = time.time()
    model.train()
    for step in range(n_steps):
        starts = torch.randint(0, len(data) - args.ctx - 1, (args.batch,), generator=gen)
        x = torch.stack([data[s : s + args.ctx] for s in starts.tolist()])
        y = torch.stack([data[s + 1 : s + args.ctx + 1] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = F.cross_entropy(model(x).view(-1, cfg["vocab_size"]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == n_steps - 1:
            el = time.time() - t_train
            log(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {el:7.1f} s  "
                f"({(step + 1) * args.batch * args.ctx / el:.0f} tokens/s)")
        if args.eval_every and step > 0 and step % args.eval_every == 0 and not args.bench:
            vl, _ = evaluate(model, val_ids[: 32 * args.ctx], args.ctx)
            log(f"step {step:5d}  validation loss (first 32 windows) {vl:.4f}")
    train_seconds = time.time() - t_train
    if args.bench:
        log(f"bench: {train_seconds / n_steps:.3f} s/step")
        return

    # Evaluate the float32 model, then round the weights to float16 (what is exported) and
    # evaluate again: the recorded loss is that of the exported weights.
    t0 = time.time()
    vl32, _ = evaluate(model, val_ids, args.ctx)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))
    vl16, per_window = evaluate(model, val_ids, args.ctx)
    log(f"validation loss: float32 {vl32:.5f}, float16 weights {vl16:.5f} (perplexity {math.exp(vl16):.4f}); "
        f"{time.time() - t0:.1f} s")

    # A seeded sample for the README.
    torch.manual_seed(args.seed)
    model.eval()
    prompt = bpe.encode("ROMEO:")
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(120):
            logits = model(torch.tensor([ids[-args.ctx:]]))[0, -1] / 0.8
            v, ix = logits.topk(40)
            ids.append(int(ix[torch.multinomial(v.softmax(-1), 1)]))
    sample = bpe.decode(ids)
    log("sample:\n" + sample)

    # Export.
    out = args.out
    os.makedirs(out, exist_ok=True)
    tensors = [(n, p) for n, p in model.named_parameters()]
    write_safetensors(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "head_dim": cfg["head_dim"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "hidden_act": "silu",
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": bpe.eot_id,
        "eos_token_id": bpe.eot_id,
        "torch_dtype": "float16",
        "initializer_range": 0.02,
        "use_cache": True,
    }
    dump(os.path.join(out, "config.json"), config)
    dump(os.path.join(out, "tokenizer.json"), bpe.tokenizer_json())
    dump(os.path.join(out, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT, "eos_token": EOT, "unk_token": None,
        "add_bos_token": False, "add_eos_token": False,
        "model_max_length": args.ctx,
        "clean_up_tokenization_spaces": False,
    })
    dump(os.path.join(out, "generation_config.json"), {
        "do_sample": True, "temperature": 0.8, "top_k": 40, "top_p": 0.95,
        "bos_token_id": bpe.eot_id, "eos_token_id": bpe.eot_id,
    })
    total_seconds = time.time() - t_start
    command = "python3 tools/train_demo.py " + " ".join(sys.argv[1:])
    eval_info = {
        "method": "validation split tokenized as one text without special tokens; consecutive "
                  "non-overlapping windows of n_ctx tokens (the last may be shorter); in each window "
                  "every token after the first is scored given the tokens before it in that window; "
                  "mean natural-log cross-entropy per scored token",
        "split": "validation = corpus bytes after the first newline at or after floor(0.9 * size)",
        "corpus_sha256": __import__("hashlib").sha256(raw).hexdigest(),
        "n_ctx": args.ctx,
        "validation_bytes": len(val_text.encode()),
        "validation_tokens": len(val_ids),
        "scored_tokens": sum(n for _, n in per_window),
        "validation_loss": vl16,
        "validation_loss_float32_weights": vl32,
        "perplexity": math.exp(vl16),
        "windows": [[round(s, 6), n] for s, n in per_window],
    }
    dump(os.path.join(out, "eval.json"), eval_info)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(README.format(
            command=command, seconds=total_seconds, train_seconds=train_seconds, n_params=n_params,
            vl16=vl16, ppl=math.exp(vl16), vl32=vl32, n_val=len(val_ids), n_scored=eval_info["scored_tokens"],
            n_train=len(train_ids), train_bytes=len(train_text), val_bytes=len(val_text),
            torch=torch.__version__, threads=args.threads, sample=sample, a=args, c=cfg,
            tokens_seen=args.steps * args.batch * args.ctx,
            n_merges=len(merges), eot=bpe.eot_id, vocab=bpe.vocab_size))
    log(f"wrote {out} in {total_seconds:.0f} s total")


README = """# tiny-shakespeare: loom's demo model

A {n_params:,}-parameter LLaMA-style language model (RMSNorm, RoPE, SwiGLU, grouped-query
attention) trained from scratch on the first 90 % of Tiny Shakespeare by `tools/train_demo.py`,
with its own byte-level BPE tokenizer. It is a Hugging Face `LlamaForCausalLM` folder, so loom
(and `transformers`) load it as is:

```sh
build/generate -m models/tiny-shakespeare -p "ROMEO:" -n 200
build/perplexity -m models/tiny-shakespeare -f validation.txt -c 256 --stride 256
```

It writes Shakespeare-flavoured nonsense: a small model, a small corpus and under half an hour
of CPU time. It exists to demonstrate and test loom end to end, not to write plays.

## Files

| file | contents |
|---|---|
| `config.json` | LlamaForCausalLM, tied embeddings, no biases |
| `model.safetensors` | weights in F16 |
| `tokenizer.json` | byte-level BPE: 256 byte tokens + {n_merges} merges + `<|endoftext|>` (id {eot}) |
| `tokenizer_config.json` | `<|endoftext|>` as BOS/EOS, no BOS or EOS added to encoded text |
| `generation_config.json` | temperature 0.8, top-k 40, top-p 0.95 |
| `eval.json` | the validation loss, the method, and the loss sum and count of every window |

## Training

Command (from the repository root, with Debian's `python3-torch` {torch}, {threads} threads):

```sh
{command}
```

* Data: `../shared/corpora/tinyshakespeare/input.txt`. Training split = bytes up to and including
  the first newline at or after 90 % of the file ({train_bytes} bytes, {n_train} tokens);
  validation split = the rest ({val_bytes} bytes, {n_val} tokens).
* Tokenizer: BPE merges learned on the training split's words (GPT-2's pre-tokenization regex),
  most frequent pair first, ties to the smallest id pair; vocabulary {vocab}.
* Model: hidden size {c[hidden_size]}, {c[num_hidden_layers]} layers, {c[num_attention_heads]} query heads and
  {c[num_key_value_heads]} key/value heads of size {c[head_dim]}, SwiGLU feed-forward {c[intermediate_size]}, RMSNorm eps
  {c[rms_norm_eps]}, RoPE theta {c[rope_theta]} (half-split `rotate_half` layout), context {c[max_position_embeddings]},
  output projection tied to the embedding. {n_params:,} parameters.
* Optimisation: AdamW (betas 0.9/0.95, weight decay {a.weight_decay} on matrices), peak learning rate
  {a.lr} with {a.warmup} warm-up steps and cosine decay to {a.min_lr}, gradient clipping 1.0, {a.steps} steps
  of {a.batch} random windows of {a.ctx}+1 tokens ({tokens_seen:,} tokens), seed {a.seed}.
* Wall time: {train_seconds:.0f} s of training, {seconds:.0f} s in total, on a 2-core machine shared with
  other jobs (the process got well under its 2 cores).
* Speed note: Debian's PyTorch calls the system BLAS (`libblas.so.3`). With the reference BLAS
  that `libblas3` provides, training is about 15 times slower; `apt-get install
  libopenblas0-pthread` switches it to OpenBLAS (this model was trained with OpenBLAS,
  `OPENBLAS_NUM_THREADS=2`). Use Debian's interpreter (`/usr/bin/python3`) if another Python
  comes first in `PATH`.
* Seeds are fixed (torch.manual_seed and the batch sampler's generator); PyTorch on another BLAS
  or thread count may still differ in the last bits.

## Validation loss

**{vl16:.5f} nats per token (perplexity {ppl:.4f})** with the exported F16 weights ({vl32:.5f} with
the float32 weights before rounding).

Method: the validation split is tokenized as one text (no BOS or other special tokens) and cut
into consecutive non-overlapping windows of 256 tokens (the last window is shorter). Within each
window every token after the first is predicted from the tokens before it in that window; the
first token of a window is context only. The loss is the mean natural-log cross-entropy over all
{n_scored} predicted tokens, accumulated in float64. This is Hugging Face's strided perplexity
with stride = context and loom's `perplexity -c 256 --stride 256`;
`tests/test_demo_model.cpp` checks that loom reproduces it within 1 %.

## Sample

PyTorch, prompt `ROMEO:`, temperature 0.8, top-k 40, 120 tokens:

```
{sample}
```

## License

The weights are derived from Shakespeare's plays (public domain); MIT like the rest of loom.
"""


if __name__ == "__main__":
    main()
