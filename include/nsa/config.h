// Config: every parameter of the NSA operator (see ../shared/docs/nsa-spec.md).
//
// Built from ConfigOptions and validated on construction: a Config that exists
// is a valid one. Parameters that depend on head sizes (scale, phi hidden size)
// may be left at 0, meaning "the spec's default for the tensors at hand".
#pragma once

#include <cstdint>
#include <string>

namespace nsa {

using index_t = std::int64_t;

// The compression function phi maps one [block_len, dim] block to a [dim] vector.
enum class PhiKind { mlp, linear, mean };

const char* phi_kind_name(PhiKind kind);
PhiKind parse_phi_kind(const std::string& name);  // throws nsa::Error on unknown names

struct ConfigOptions {
  int block_len = 32;   // l: compression block length
  int stride = 16;      // d: compression stride (divides l)
  int sel_block = 64;   // l': selection block length (l divides l')
  int top_n = 16;       // n: selected blocks per query, forced ones included
  int n_init = 1;       // forced initial blocks
  int n_local = 2;      // forced local blocks (the current one and those before it)
  int window = 512;     // w: sliding window in tokens, current token included
  double scale = 0.0;   // softmax scale; 0 means 1/sqrt(d_k)
  PhiKind phi = PhiKind::mlp;
  int phi_hidden = 0;   // hidden size of the mlp phi; 0 means the head dim (d_k for K, d_v for V)
};

class Config {
 public:
  Config();  // the paper's defaults
  explicit Config(const ConfigOptions& options);  // throws nsa::Error naming the bad parameter

  const ConfigOptions& options() const { return options_; }
  int block_len() const { return options_.block_len; }
  int stride() const { return options_.stride; }
  int sel_block() const { return options_.sel_block; }
  int top_n() const { return options_.top_n; }
  int n_init() const { return options_.n_init; }
  int n_local() const { return options_.n_local; }
  int window() const { return options_.window; }
  PhiKind phi() const { return options_.phi; }

  // Resolved values for given head dims.
  double scale_for(index_t d_k) const;
  index_t phi_hidden_for(index_t dim) const;

  // N_cmp(T) = floor((T - l)/d) + 1 when T >= l, else 0.
  index_t num_cmp_blocks(index_t seq_len) const;
  // Number of selection blocks that start inside a sequence of seq_len tokens.
  index_t num_sel_blocks(index_t seq_len) const;
  // Compressed blocks visible to query t: those with i*d + l - 1 <= t.
  index_t visible_cmp_blocks(index_t t) const;

  std::string describe() const;

 private:
  ConfigOptions options_;
};

}  // namespace nsa
