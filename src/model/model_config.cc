#include "model/model_config.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>

#include "nsa/error.h"

namespace nsa::model {

const char* attention_kind_name(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::nsa: return "nsa";
    case AttentionKind::full: return "full";
    case AttentionKind::window: return "window";
  }
  return "?";
}

AttentionKind parse_attention_kind(const std::string& name) {
  if (name == "nsa") return AttentionKind::nsa;
  if (name == "full") return AttentionKind::full;
  if (name == "window") return AttentionKind::window;
  throw Error("unknown attention kind '" + name + "' (expected nsa, full or window)");
}

ConfigOptions default_small_nsa_options() {
  ConfigOptions o;
  o.block_len = 16;
  o.stride = 8;
  o.sel_block = 32;
  o.top_n = 8;
  o.n_init = 1;
  o.n_local = 2;
  o.window = 128;
  o.phi = PhiKind::mlp;
  return o;
}

namespace {

void require_positive(long long value, const char* name) {
  if (value <= 0)
    throw Error(std::string("model config: ") + name + " must be positive, got " +
                std::to_string(value));
}

std::string format_double(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

}  // namespace

void ModelConfig::validate() const {
  require_positive(vocab, "vocab");
  require_positive(d_model, "d_model");
  require_positive(n_layers, "n_layers");
  require_positive(n_heads, "n_heads");
  require_positive(n_kv_heads, "n_kv_heads");
  require_positive(d_k, "d_k");
  require_positive(d_v, "d_v");
  require_positive(mlp_hidden, "mlp_hidden");
  if (n_heads % n_kv_heads != 0)
    throw Error("model config: n_heads=" + std::to_string(n_heads) +
                " must be a multiple of n_kv_heads=" + std::to_string(n_kv_heads));
  if (d_k % 2 != 0)
    throw Error("model config: d_k=" + std::to_string(d_k) +
                " must be even (RoPE rotates pairs (j, j + d_k/2))");
  if (!std::isfinite(rope_theta) || !(rope_theta > 1.0))
    throw Error("model config: rope_theta must be finite and > 1, got " + format_double(rope_theta));
  if (!std::isfinite(norm_eps) || !(norm_eps > 0.0))
    throw Error("model config: norm_eps must be finite and > 0, got " + format_double(norm_eps));
  if (!std::isfinite(init_std) || !(init_std > 0.0))
    throw Error("model config: init_std must be finite and > 0, got " + format_double(init_std));
  if (attention != AttentionKind::nsa && attention != AttentionKind::full &&
      attention != AttentionKind::window)
    throw Error("model config: attention is not one of nsa, full, window");
  if (token_shift < 0 || token_shift > 8)
    throw Error("model config: token_shift=" + std::to_string(token_shift) + " must be in 0..8 (0: none)");
  if (independent_kv && attention != AttentionKind::nsa)
    throw Error(std::string("model config: independent_kv applies to the nsa attention only, not ") +
                attention_kind_name(attention));
  // The block sizes matter to nsa and window (which runs the nsa operator); the full kind
  // reads only nsa.scale.
  if (attention != AttentionKind::full) {
    try {
      Config checked(nsa);
      (void)checked;
    } catch (const Error& e) {
      throw Error(std::string("model config: nsa options: ") + e.what());
    }
  } else if (!std::isfinite(nsa.scale) || nsa.scale < 0.0) {
    throw Error("model config: nsa.scale must be finite and >= 0 (0 means 1/sqrt(d_k))");
  }
}

std::string ModelConfig::describe() const {
  std::ostringstream s;
  s << attention_kind_name(attention) << " model: vocab=" << vocab << " d_model=" << d_model
    << " layers=" << n_layers << " H=" << n_heads << " H_kv=" << n_kv_heads << " d_k=" << d_k
    << " d_v=" << d_v << " mlp_hidden=" << mlp_hidden;
  if (token_shift > 0) s << " token_shift=" << token_shift;
  if (attention == AttentionKind::nsa) {
    s << (independent_kv ? " independent_kv" : " shared_kv") << " [" << Config(nsa).describe() << "]";
  } else if (attention == AttentionKind::window) {
    s << " window=" << nsa.window;
  }
  return s.str();
}

namespace {

// One table of (key, getter, setter) shared by serialize and parse, so that the two
// cannot drift apart.
struct Field {
  const char* key;
  std::function<std::string(const ModelConfig&)> get;
  std::function<void(ModelConfig&, const std::string&)> set;
};

int parse_int(const std::string& key, const std::string& value) {
  std::size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || x < -(1ll << 31) || x >= (1ll << 31))
    throw Error("model config: " + key + "='" + value + "' is not an integer");
  return static_cast<int>(x);
}

double parse_double(const std::string& key, const std::string& value) {
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size()) throw Error("model config: " + key + "='" + value + "' is not a number");
  return x;
}

bool parse_bool(const std::string& key, const std::string& value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw Error("model config: " + key + "='" + value + "' is not true or false");
}

#define NSA_INT_FIELD(name, member)                                                  \
  Field{name, [](const ModelConfig& c) { return std::to_string(c.member); },         \
        [](ModelConfig& c, const std::string& v) { c.member = parse_int(name, v); }}
#define NSA_DOUBLE_FIELD(name, member)                                               \
  Field{name, [](const ModelConfig& c) { return format_double(c.member); },          \
        [](ModelConfig& c, const std::string& v) { c.member = parse_double(name, v); }}

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      NSA_INT_FIELD("vocab", vocab),
      NSA_INT_FIELD("d_model", d_model),
      NSA_INT_FIELD("n_layers", n_layers),
      NSA_INT_FIELD("n_heads", n_heads),
      NSA_INT_FIELD("n_kv_heads", n_kv_heads),
      NSA_INT_FIELD("d_k", d_k),
      NSA_INT_FIELD("d_v", d_v),
      NSA_INT_FIELD("mlp_hidden", mlp_hidden),
      NSA_INT_FIELD("token_shift", token_shift),
      NSA_DOUBLE_FIELD("rope_theta", rope_theta),
      NSA_DOUBLE_FIELD("norm_eps", norm_eps),
      NSA_DOUBLE_FIELD("init_std", init_std),
      Field{"attention", [](const ModelConfig& c) { return std::string(attention_kind_name(c.attention)); },
            [](ModelConfig& c, const std::string& v) { c.attention = parse_attention_kind(v); }},
      Field{"independent_kv", [](const ModelConfig& c) { return std::string(c.independent_kv ? "true" : "false"); },
            [](ModelConfig& c, const std::string& v) { c.independent_kv = parse_bool("independent_kv", v); }},
      NSA_INT_FIELD("nsa.block_len", nsa.block_len),
      NSA_INT_FIELD("nsa.stride", nsa.stride),
      NSA_INT_FIELD("nsa.sel_block", nsa.sel_block),
      NSA_INT_FIELD("nsa.top_n", nsa.top_n),
      NSA_INT_FIELD("nsa.n_init", nsa.n_init),
      NSA_INT_FIELD("nsa.n_local", nsa.n_local),
      NSA_INT_FIELD("nsa.window", nsa.window),
      NSA_DOUBLE_FIELD("nsa.scale", nsa.scale),
      Field{"nsa.phi", [](const ModelConfig& c) { return std::string(phi_kind_name(c.nsa.phi)); },
            [](ModelConfig& c, const std::string& v) { c.nsa.phi = parse_phi_kind(v); }},
      NSA_INT_FIELD("nsa.phi_hidden", nsa.phi_hidden),
  };
  return table;
}

#undef NSA_INT_FIELD
#undef NSA_DOUBLE_FIELD

std::string trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t\r");
  if (begin == std::string::npos) return "";
  const auto end = s.find_last_not_of(" \t\r");
  return s.substr(begin, end - begin + 1);
}

}  // namespace

std::string ModelConfig::serialize() const {
  std::string out;
  for (const Field& f : fields()) out += std::string(f.key) + "=" + f.get(*this) + "\n";
  return out;
}

// Lines "key=value"; blank lines are skipped. Every key must be known and appear at most
// once; keys that are absent keep their defaults. The result is validated.
ModelConfig ModelConfig::parse(const std::string& text) {
  std::map<std::string, const Field*> by_key;
  for (const Field& f : fields()) by_key[f.key] = &f;
  ModelConfig config;
  std::map<std::string, bool> seen;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    line = trim(line);
    if (line.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) throw Error("model config: line '" + line + "' is not key=value");
    const std::string key = trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    const auto it = by_key.find(key);
    if (it == by_key.end()) throw Error("model config: unknown key '" + key + "'");
    if (seen[key]) throw Error("model config: key '" + key + "' given twice");
    seen[key] = true;
    it->second->set(config, value);
  }
  config.validate();
  return config;
}

}  // namespace nsa::model
