// Hugging Face `tokenizers` JSON (tokenizer.json) → loom::Tokenizer.
//
// Supported: model BPE (vocab object; merges as "a b" strings or ["a","b"] pairs; byte_fallback,
// fuse_unk, ignore_merges, unk_token); normalizers Sequence / Prepend / Replace (string
// pattern) / NFC (only for input that passes the NFC quick check: loom has no composer);
// pre-tokenizers Sequence / ByteLevel (use_regex, add_prefix_space) / Split (Regex or String
// pattern, every behavior, invert) / Digits / Punctuation / WhitespaceSplit / Metaspace; decoders Sequence / ByteLevel / Replace / ByteFallback / Fuse / Strip / Metaspace;
// post-processors TemplateProcessing / ByteLevel / RobertaProcessing / BertProcessing / Sequence;
// added_tokens. `truncation` and `padding` are ignored. Anything else is rejected with
// Error(unsupported) naming the component, never silently approximated.
//
// A sibling tokenizer_config.json, when present, supplies bos_token / eos_token and
// add_bos_token / add_eos_token (which override the post-processor's rule).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/error.hpp"
#include "loom/io/input_file.hpp"
#include "loom/io/json_text.hpp"
#include "loom/limits.hpp"
#include "loom/tokenizer/pretokenizer.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom::detail {

/// Reads tokenizer.json text; every error names the source and the JSON path of the field.
class TokenizerJsonReader {
  using json = nlohmann::json;

 public:
  TokenizerJsonReader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void bad(std::string_view where, std::string_view what) const {
    fail(ErrorKind::format, "tokenizer.json", "'", source_, "': ", where, ": ", what);
  }
  [[noreturn]] void unsupported(std::string_view where, std::string_view what) const {
    fail(ErrorKind::unsupported, "tokenizer.json", "'", source_, "': ", where, ": ", what);
  }

  static std::string type_name(const json& j) { return j.type_name(); }

  const json& member(const json& obj, const char* key, std::string_view where) const {
    const auto it = obj.find(key);
    if (it == obj.end()) bad(where, loom::detail::cat("missing field '", key, "'"));
    return *it;
  }
  const json* optional_member(const json& obj, const char* key) const {
    const auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  std::string str(const json& j, std::string_view where) const {
    if (!j.is_string()) bad(where, "expected a string, got " + type_name(j));
    return j.get<std::string>();
  }
  bool boolean(const json& obj, const char* key, bool dflt, std::string_view where) const {
    const json* j = optional_member(obj, key);
    if (!j) return dflt;
    if (!j->is_boolean()) bad(loom::detail::cat(where, ".", key), "expected a boolean, got " + type_name(*j));
    return j->get<bool>();
  }
  std::int64_t integer(const json& j, std::string_view where) const {
    if (!j.is_number_integer()) bad(where, "expected an integer, got " + type_name(j));
    if (j.is_number_unsigned() && j.get<std::uint64_t>() > std::uint64_t(INT64_MAX)) bad(where, "integer out of range");
    return j.get<std::int64_t>();
  }
  const json& object(const json& j, std::string_view where) const {
    if (!j.is_object()) bad(where, "expected an object, got " + type_name(j));
    return j;
  }
  const json& array(const json& j, std::string_view where) const {
    if (!j.is_array()) bad(where, "expected an array, got " + type_name(j));
    return j;
  }
  std::string type_of(const json& obj, std::string_view where) const {
    object(obj, where);
    return str(member(obj, "type", where), loom::detail::cat(where, ".type"));
  }

  TokenizerSpec read(const json& root, const json* config) {
    object(root, "root");
    spec_.source = source_;
    read_model(member(root, "model", "root"));
    if (const json* a = optional_member(root, "added_tokens")) read_added(*a);
    if (const json* n = optional_member(root, "normalizer")) read_normalizer(*n, "normalizer", 0);
    check_normalizer_growth();
    if (const json* p = optional_member(root, "pre_tokenizer")) read_pre_tokenizer(*p, "pre_tokenizer", 0);
    if (const json* d = optional_member(root, "decoder")) read_decoder(*d);
    if (const json* p = optional_member(root, "post_processor")) read_post_processor(*p, "post_processor", 0);
    finish(config);
    return std::move(spec_);
  }

 private:
  // ---- model -----------------------------------------------------------------------------------
  void read_model(const json& m) {
    object(m, "model");
    std::string type = "BPE";
    if (const json* t = optional_member(m, "type")) type = str(*t, "model.type");
    if (type != "BPE") unsupported("model.type", "model type '" + type + "' (only BPE is implemented)");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (const json* v = optional_member(m, key); v && !str(*v, std::string("model.") + key).empty())
        unsupported(std::string("model.") + key, "non-empty value '" + v->get<std::string>() + "'");
    }
    spec_.byte_fallback = boolean(m, "byte_fallback", false, "model");
    spec_.fuse_unk = boolean(m, "fuse_unk", false, "model");
    spec_.ignore_merges = boolean(m, "ignore_merges", false, "model");
    if (const json* u = optional_member(m, "unk_token")) unk_token_ = str(*u, "model.unk_token");

    // vocab: piece → id. Ids must be unique; gaps are allowed (filled by added tokens or unused).
    const json& vocab = object(member(m, "vocab", "model"), "model.vocab");
    std::int64_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const std::int64_t id = integer(it.value(), "model.vocab['" + it.key() + "']");
      if (id < 0) bad("model.vocab['" + it.key() + "']", loom::detail::cat("negative id ", id));
      max_id = std::max(max_id, id);
    }
    ensure_size(max_id, std::int64_t(vocab.size()), "model.vocab");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const auto id = std::size_t(it.value().get<std::int64_t>());
      if (defined_[id]) bad("model.vocab['" + it.key() + "']", loom::detail::cat("id ", id, " is also used by '", spec_.pieces[id], "'"));
      defined_[id] = true;
      spec_.pieces[id] = it.key();
      vocab_.emplace(it.key(), std::int32_t(id));
    }

    // merges
    const json& merges = array(member(m, "merges", "model"), "model.merges");
    spec_.merges.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const json& e = merges[r];
      const std::string where = loom::detail::cat("model.merges[", r, "]");
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const auto sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          bad(where, "merge '" + s + "' must be two tokens separated by exactly one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2) {
        a = str(e[0], where + "[0]");
        b = str(e[1], where + "[1]");
      } else {
        bad(where, "expected a \"left right\" string or a [left, right] pair, got " + type_name(e));
      }
      const auto ia = vocab_.find(a), ib = vocab_.find(b);
      if (ia == vocab_.end()) bad(where, "left token '" + a + "' is not in the vocabulary");
      if (ib == vocab_.end()) bad(where, "right token '" + b + "' is not in the vocabulary");
      if (!vocab_.count(a + b)) bad(where, "merged token '" + a + b + "' is not in the vocabulary");
      spec_.merges.emplace_back(ia->second, ib->second);
    }
  }

  /// Grows the piece table to hold id `max_id`, refusing absurd sizes (a bound linear in the
  /// number of entries keeps a hostile file from forcing a huge allocation).
  void ensure_size(std::int64_t max_id, std::int64_t entries, std::string_view where) {
    const std::int64_t limit = 2 * (std::int64_t(defined_.size()) + entries) + 1024;
    if (max_id >= limit || max_id >= INT32_MAX)
      bad(where, loom::detail::cat("id ", max_id, " is far beyond the ", entries, " entries"));
    if (max_id + 1 > std::int64_t(spec_.pieces.size())) {
      spec_.pieces.resize(std::size_t(max_id + 1));
      defined_.resize(std::size_t(max_id + 1), false);
    }
  }

  // ---- added tokens ------------------------------------------------------------------------------
  void read_added(const json& added) {
    array(added, "added_tokens");
    for (std::size_t i = 0; i < added.size(); ++i) {
      const std::string where = loom::detail::cat("added_tokens[", i, "]");
      const json& t = object(added[i], where);
      const std::int64_t id = integer(member(t, "id", where), where + ".id");
      const std::string content = str(member(t, "content", where), where + ".content");
      if (id < 0) bad(where + ".id", loom::detail::cat("negative id ", id));
      if (content.empty()) bad(where + ".content", "empty token");
      ensure_size(id, std::int64_t(added.size()), where + ".id");
      const auto uid = std::size_t(id);
      if (defined_[uid] && spec_.pieces[uid] != content && !added_ids_.count(uid))
        bad(where, loom::detail::cat("id ", id, " is '", spec_.pieces[uid], "' in the vocabulary but '", content, "' here"));
      defined_[uid] = true;
      spec_.pieces[uid] = content;
      vocab_[content] = std::int32_t(id);
      const bool special = boolean(t, "special", false, where);
      added_ids_[uid] = special;
      AddedTokenRule rule{std::int32_t(id), boolean(t, "lstrip", false, where), boolean(t, "rstrip", false, where)};
      if (rule.lstrip || rule.rstrip) spec_.added_rules.push_back(rule);
    }
  }

  // ---- limits (limits.hpp) ---------------------------------------------------------------------
  /// Refuses a `Sequence` nested deeper than limits::tokenizer_nesting or a component list
  /// longer than limits::tokenizer_steps, before reading it.
  void check_sequence(const json& list, const std::string& where, int depth, std::size_t steps_so_far) const {
    if (depth >= limits::tokenizer_nesting)
      bad(where, loom::detail::cat("Sequence nested more than ", limits::tokenizer_nesting, " levels deep"));
    if (steps_so_far + list.size() > std::size_t(limits::tokenizer_steps))
      bad(where, loom::detail::cat("more than ", limits::tokenizer_steps, " steps"));
  }

  /// Normalization must keep the text within limits::normalizer_growth times its length (plus the
  /// Prepend steps): chained Replace steps that each lengthen it could grow a prompt exponentially.
  void check_normalizer_growth() const {
    double growth = 1;
    for (const NormalizerStep& n : spec_.normalizers)
      if (n.kind == NormalizerStep::Kind::replace && n.with.size() > n.text.size())
        growth *= double(n.with.size()) / double(n.text.size());
    if (growth > limits::normalizer_growth)
      bad("normalizer", loom::detail::cat("the Replace steps can make a text ", growth,
                                          " times longer, more than the limit of ", limits::normalizer_growth));
  }

  // ---- normalizer ----------------------------------------------------------------------------
  void read_normalizer(const json& n, const std::string& where, int depth) {
    const std::string type = type_of(n, where);
    if (type == "Sequence") {
      const json& list = array(member(n, "normalizers", where), where + ".normalizers");
      check_sequence(list, where, depth, spec_.normalizers.size());
      for (std::size_t i = 0; i < list.size(); ++i)
        read_normalizer(list[i], loom::detail::cat(where, ".normalizers[", i, "]"), depth + 1);
    } else if (type == "Prepend") {
      spec_.normalizers.push_back({NormalizerStep::Kind::prepend, str(member(n, "prepend", where), where + ".prepend"), {}});
    } else if (type == "Replace") {
      const json& pat = object(member(n, "pattern", where), where + ".pattern");
      if (!pat.contains("String")) unsupported(where + ".pattern", "only String patterns are implemented, not " + pat.dump());
      const std::string from = str(pat["String"], where + ".pattern.String");
      if (from.empty()) bad(where + ".pattern.String", "empty pattern");
      spec_.normalizers.push_back({NormalizerStep::Kind::replace, from, str(member(n, "content", where), where + ".content")});
    } else if (type == "NFC") {
      // Accepted for text that is already NFC (the usual case); other text fails at encode time.
      spec_.normalizers.push_back({NormalizerStep::Kind::nfc, {}, {}});
    } else {
      unsupported(where, "normalizer '" + type + "'");
    }
  }

  // ---- pre-tokenizer -------------------------------------------------------------------------
  SplitBehavior behavior_of(const json& p, const std::string& where, SplitBehavior dflt) const {
    const json* b = optional_member(p, "behavior");
    if (!b) return dflt;
    const std::string name = str(*b, where + ".behavior");
    if (name == "Isolated") return SplitBehavior::isolated;
    if (name == "Removed") return SplitBehavior::removed;
    if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
    if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
    if (name == "Contiguous") return SplitBehavior::contiguous;
    bad(where + ".behavior", "unknown split behavior '" + name + "'");
  }

  /// Compiles a split pattern now, so that a pattern loom cannot run is reported with its path.
  void check_regex(const std::string& regex, const std::string& where) const {
    try {
      Splitter check(regex);
    } catch (const Error& e) {
      unsupported(where, e.what());
    }
  }

  void read_pre_tokenizer(const json& p, const std::string& where, int depth) {
    const std::string type = type_of(p, where);
    PreTokenizerStep step;
    if (type == "Sequence") {
      const json& list = array(member(p, "pretokenizers", where), where + ".pretokenizers");
      check_sequence(list, where, depth, spec_.pre_tokenizers.size());
      for (std::size_t i = 0; i < list.size(); ++i)
        read_pre_tokenizer(list[i], loom::detail::cat(where, ".pretokenizers[", i, "]"), depth + 1);
      return;
    } else if (type == "ByteLevel") {
      step.kind = PreTokenizerStep::Kind::byte_level;
      step.add_prefix_space = boolean(p, "add_prefix_space", false, where);
      step.use_regex = boolean(p, "use_regex", true, where);
      step.regex = kGpt2SplitRegex;
    } else if (type == "Split") {
      step.kind = PreTokenizerStep::Kind::split;
      const json& pat = object(member(p, "pattern", where), where + ".pattern");
      if (pat.contains("Regex")) {
        step.regex = str(pat["Regex"], where + ".pattern.Regex");
        check_regex(step.regex, where + ".pattern.Regex");
      } else if (pat.contains("String")) {
        const std::string literal = str(pat["String"], where + ".pattern.String");
        if (literal.empty()) bad(where + ".pattern.String", "empty pattern");
        step.regex = regex_escape(literal);
      } else {
        bad(where + ".pattern", "expected a Regex or String pattern, not " + pat.dump());
      }
      step.behavior = behavior_of(p, where, SplitBehavior::isolated);
      step.invert = boolean(p, "invert", false, where);
    } else if (type == "Digits") {
      // Digits (char::is_numeric, i.e. \p{N}): each digit alone, or runs of them.
      step.kind = PreTokenizerStep::Kind::split;
      step.regex = R"(\p{N})";
      step.behavior = boolean(p, "individual_digits", false, where) ? SplitBehavior::isolated : SplitBehavior::contiguous;
    } else if (type == "Punctuation") {
      // ASCII punctuation (which includes $+<=>^`|~) and Unicode P, one character per match.
      step.kind = PreTokenizerStep::Kind::split;
      step.regex = R"([\p{P}!-/:-@\[-`{-~])";
      step.behavior = behavior_of(p, where, SplitBehavior::isolated);
    } else if (type == "WhitespaceSplit") {
      step.kind = PreTokenizerStep::Kind::split;
      step.regex = R"(\s+)";
      step.behavior = SplitBehavior::removed;
    } else if (type == "Metaspace") {
      step.kind = PreTokenizerStep::Kind::metaspace;
      if (const json* r = optional_member(p, "replacement")) step.replacement = str(*r, where + ".replacement");
      step.split = boolean(p, "split", true, where);
      step.prepend = boolean(p, "add_prefix_space", true, where) ? PreTokenizerStep::Prepend::always
                                                                 : PreTokenizerStep::Prepend::never;
      if (const json* s = optional_member(p, "prepend_scheme")) {
        const std::string scheme = str(*s, where + ".prepend_scheme");
        if (scheme == "always") step.prepend = PreTokenizerStep::Prepend::always;
        else if (scheme == "first") step.prepend = PreTokenizerStep::Prepend::first;
        else if (scheme == "never") step.prepend = PreTokenizerStep::Prepend::never;
        else unsupported(where + ".prepend_scheme", "prepend scheme '" + scheme + "'");
      }
    } else {
      unsupported(where, "pre-tokenizer '" + type + "'");
    }
    spec_.pre_tokenizers.push_back(step);
  }

  // ---- decoder -----------------------------------------------------------------------------
  void read_decoder(const json& d) {
    std::vector<std::pair<const json*, std::string>> steps;
    if (type_of(d, "decoder") == "Sequence") {
      const json& list = array(member(d, "decoders", "decoder"), "decoder.decoders");
      for (std::size_t i = 0; i < list.size(); ++i) steps.emplace_back(&list[i], loom::detail::cat("decoder.decoders[", i, "]"));
    } else {
      steps.emplace_back(&d, "decoder");
    }
    auto& dec = spec_.decoder;
    dec.byte_tokens = false;
    bool fused = steps.size() == 1;  // a lone decoder sees the whole text
    for (const auto& [j, where] : steps) {
      const std::string type = type_of(*j, where);
      if (type == "ByteLevel") {
        dec.byte_level = true;
      } else if (type == "ByteFallback") {
        dec.byte_tokens = true;
      } else if (type == "Fuse") {
        fused = true;
      } else if (type == "Replace") {
        const json& pat = object(member(*j, "pattern", where), where + ".pattern");
        const std::string from = pat.contains("String") ? str(pat["String"], where + ".pattern.String") : "";
        const std::string to = str(member(*j, "content", where), where + ".content");
        if (from.empty() || to != " ")
          unsupported(where, "Replace decoder other than \"<marker>\" → \" \": " + j->dump());
        dec.space_marker = from;
      } else if (type == "Strip") {
        const std::string content = str(member(*j, "content", where), where + ".content");
        const std::int64_t start = integer(member(*j, "start", where), where + ".start");
        const std::int64_t stop = integer(member(*j, "stop", where), where + ".stop");
        if (content != " " || start != 1 || stop != 0 || !fused)
          unsupported(where, "Strip decoder other than one leading space of the fused text: " + j->dump());
        dec.strip = StripSpace::first_piece;
      } else if (type == "Metaspace") {
        dec.space_marker = j->contains("replacement") ? str((*j)["replacement"], where + ".replacement") : "\xE2\x96\x81";
        bool prefix = boolean(*j, "add_prefix_space", true, where);
        if (const json* s = optional_member(*j, "prepend_scheme")) prefix = str(*s, where + ".prepend_scheme") != "never";
        if (prefix) dec.strip = StripSpace::first_piece;
      } else {
        unsupported(where, "decoder '" + type + "'");
      }
    }
  }

  // ---- post-processor ------------------------------------------------------------------------
  std::int32_t token_id_of(const std::string& name, std::string_view where) const {
    const auto it = vocab_.find(name);
    if (it == vocab_.end()) bad(where, "special token '" + name + "' is not in the vocabulary");
    return it->second;
  }

  void read_post_processor(const json& p, const std::string& where, int depth) {
    const std::string type = type_of(p, where);
    if (type == "Sequence") {
      const json& list = array(member(p, "processors", where), where + ".processors");
      check_sequence(list, where, depth, 0);
      for (std::size_t i = 0; i < list.size(); ++i)
        read_post_processor(list[i], loom::detail::cat(where, ".processors[", i, "]"), depth + 1);
    } else if (type == "ByteLevel") {
      // Only adjusts offsets.
    } else if (type == "TemplateProcessing") {
      const json& single = array(member(p, "single", where), where + ".single");
      std::unordered_map<std::string, std::vector<std::int32_t>> ids;
      if (const json* st = optional_member(p, "special_tokens")) {
        object(*st, where + ".special_tokens");
        for (auto it = st->begin(); it != st->end(); ++it) {
          const std::string w = where + ".special_tokens['" + it.key() + "']";
          const json& list = array(member(object(it.value(), w), "ids", w), w + ".ids");
          auto& v = ids[it.key()];
          for (std::size_t k = 0; k < list.size(); ++k) {
            const std::int64_t id = integer(list[k], loom::detail::cat(w, ".ids[", k, "]"));
            if (id < 0 || id >= std::int64_t(spec_.pieces.size())) bad(w, loom::detail::cat("id ", id, " is outside the vocabulary"));
            v.push_back(std::int32_t(id));
          }
        }
      }
      bool seen_sequence = false;
      std::vector<std::int32_t> prefix, suffix;
      for (std::size_t i = 0; i < single.size(); ++i) {
        const std::string w = loom::detail::cat(where, ".single[", i, "]");
        const json& e = object(single[i], w);
        if (e.contains("Sequence")) {
          seen_sequence = true;
        } else if (e.contains("SpecialToken")) {
          const std::string name = str(member(object(e["SpecialToken"], w), "id", w), w + ".SpecialToken.id");
          std::vector<std::int32_t> v;
          if (auto it = ids.find(name); it != ids.end()) v = it->second;
          else v.push_back(token_id_of(name, w));
          auto& dst = seen_sequence ? suffix : prefix;
          dst.insert(dst.end(), v.begin(), v.end());
        } else {
          unsupported(w, "template piece " + e.dump());
        }
      }
      spec_.prefix_ids = prefix;
      spec_.suffix_ids = suffix;
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      auto pair_id = [&](const char* key) {
        const json& a = array(member(p, key, where), where + "." + key);
        if (a.size() != 2) bad(where + "." + key, "expected [token, id]");
        const std::int64_t id = integer(a[1], where + "." + key + "[1]");
        if (id < 0 || id >= std::int64_t(spec_.pieces.size())) bad(where + "." + key, loom::detail::cat("id ", id, " is outside the vocabulary"));
        return std::int32_t(id);
      };
      spec_.prefix_ids = {pair_id("cls")};
      spec_.suffix_ids = {pair_id("sep")};
    } else {
      unsupported(where, "post-processor '" + type + "'");
    }
  }

  // ---- final assembly ------------------------------------------------------------------------
  static std::optional<std::string> config_token(const json& config, const char* key) {
    const auto it = config.find(key);
    if (it == config.end()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
    return std::nullopt;
  }

  std::int32_t find(std::string_view piece) const {
    const auto it = vocab_.find(std::string(piece));
    return it == vocab_.end() ? -1 : it->second;
  }

  void finish(const json* config) {
    const std::size_t n = spec_.pieces.size();
    if (n == 0) bad("model.vocab", "empty vocabulary");
    spec_.types.assign(n, TokenType::normal);
    for (std::size_t i = 0; i < n; ++i) {
      if (!defined_[i]) spec_.types[i] = TokenType::unused;
      else if (spec_.byte_fallback && loom::detail::parse_byte_piece(spec_.pieces[i]) >= 0) spec_.types[i] = TokenType::byte;
    }
    for (const auto& [id, special] : added_ids_)
      spec_.types[id] = special ? TokenType::control : TokenType::user_defined;
    if (unk_token_) {
      spec_.unk_id = find(*unk_token_);
      if (spec_.unk_id < 0) bad("model.unk_token", "'" + *unk_token_ + "' is not in the vocabulary");
      spec_.types[std::size_t(spec_.unk_id)] = TokenType::unknown;
    }

    // BOS / EOS: from the post-processor, then tokenizer_config.json, then well-known names.
    if (!spec_.prefix_ids.empty()) spec_.bos_id = spec_.prefix_ids.front();
    if (!spec_.suffix_ids.empty()) spec_.eos_id = spec_.suffix_ids.back();
    if (config) {
      if (auto b = config_token(*config, "bos_token")) spec_.bos_id = find(*b);
      if (auto e = config_token(*config, "eos_token")) spec_.eos_id = find(*e);
      if (const auto it = config->find("add_bos_token"); it != config->end() && it->is_boolean()) {
        const bool has = !spec_.prefix_ids.empty() && spec_.prefix_ids.front() == spec_.bos_id;
        if (it->get<bool>() && !has && spec_.bos_id >= 0) spec_.prefix_ids.insert(spec_.prefix_ids.begin(), spec_.bos_id);
        if (!it->get<bool>() && has) spec_.prefix_ids.erase(spec_.prefix_ids.begin());
      }
      if (const auto it = config->find("add_eos_token"); it != config->end() && it->is_boolean()) {
        const bool has = !spec_.suffix_ids.empty() && spec_.suffix_ids.back() == spec_.eos_id;
        if (it->get<bool>() && !has && spec_.eos_id >= 0) spec_.suffix_ids.push_back(spec_.eos_id);
        if (!it->get<bool>() && has) spec_.suffix_ids.pop_back();
      }
    }
    auto special = [&](std::string_view name) {
      const std::int32_t id = find(name);
      return id >= 0 && spec_.types[std::size_t(id)] == TokenType::control ? id : -1;
    };
    if (spec_.bos_id < 0)
      for (auto name : {"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"})
        if ((spec_.bos_id = special(name)) >= 0) break;
    if (spec_.eos_id < 0)
      for (auto name : {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"})
        if ((spec_.eos_id = special(name)) >= 0) break;
    for (auto name : {"<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "</s>", "<|end_of_text|>"})
      if (const std::int32_t id = special(name); id >= 0 && id != spec_.eos_id) spec_.eog_ids.push_back(id);
  }

  std::string source_;
  TokenizerSpec spec_;
  std::vector<bool> defined_;
  std::unordered_map<std::string, std::int32_t> vocab_;
  std::unordered_map<std::size_t, bool> added_ids_;  // id → special
  std::optional<std::string> unk_token_;
};

inline nlohmann::json tokenizer_json_parse(std::string_view text, const std::string& source, std::string_view area) {
  loom::io::detail::check_json_depth(text, area, source, "JSON");
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::format, area, "'", source, "': invalid JSON: ", e.what());
  }
}

inline std::string tokenizer_json_read_file(const std::filesystem::path& path, std::string_view area) {
  return io::read_input(path, area, limits::json_file_bytes, "JSON file");
}

}  // namespace loom::detail

namespace loom::io {

/// Builds a Tokenizer from tokenizer.json text. `source` names it in error messages;
/// `config_json` is the text of tokenizer_config.json (empty: none).
/// Throws Error(format) for malformed JSON or fields, Error(unsupported) for valid components
/// loom does not implement.
inline Tokenizer load_tokenizer_json_string(std::string_view json_text, std::string source = "<string>",
                                            std::string_view config_json = {}) {
  const auto root = loom::detail::tokenizer_json_parse(json_text, source, "tokenizer.json");
  std::optional<nlohmann::json> config;
  if (!config_json.empty()) {
    config = loom::detail::tokenizer_json_parse(config_json, source + " (tokenizer_config.json)", "tokenizer.json");
    if (!config->is_object()) fail(ErrorKind::format, "tokenizer.json", "'", source, "': tokenizer_config.json is not an object");
  }
  try {
    loom::detail::TokenizerJsonReader reader(source);
    return Tokenizer(reader.read(root, config ? &*config : nullptr));
  } catch (const nlohmann::json::exception& e) {  // safety net; the reader checks types itself
    fail(ErrorKind::format, "tokenizer.json", "'", source, "': ", e.what());
  }
}

/// Loads `path` (a tokenizer.json file, or a folder holding one) and its sibling
/// tokenizer_config.json when present.
inline Tokenizer load_tokenizer_json(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  if (io::is_directory(file)) file /= "tokenizer.json";
  const std::string text = loom::detail::tokenizer_json_read_file(file, "tokenizer.json");
  std::string config;
  const auto config_path = file.parent_path() / "tokenizer_config.json";
  if (io::is_regular_file(config_path)) config = loom::detail::tokenizer_json_read_file(config_path, "tokenizer.json");
  return load_tokenizer_json_string(text, file.string(), config);
}

}  // namespace loom::io
