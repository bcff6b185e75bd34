#include "nsa/config.h"

#include <cmath>
#include <sstream>

#include "nsa/error.h"

namespace nsa {

const char* phi_kind_name(PhiKind kind) {
  switch (kind) {
    case PhiKind::mlp: return "mlp";
    case PhiKind::linear: return "linear";
    case PhiKind::mean: return "mean";
  }
  return "?";
}

PhiKind parse_phi_kind(const std::string& name) {
  if (name == "mlp") return PhiKind::mlp;
  if (name == "linear") return PhiKind::linear;
  if (name == "mean") return PhiKind::mean;
  throw Error("unknown phi kind '" + name + "' (expected mlp, linear or mean)");
}

namespace {
void require_positive(int value, const char* name) {
  if (value <= 0) throw Error(std::string(name) + " must be positive, got " + std::to_string(value));
}
}  // namespace

Config::Config() : Config(ConfigOptions{}) {}

Config::Config(const ConfigOptions& o) : options_(o) {
  require_positive(o.block_len, "block_len");
  require_positive(o.stride, "stride");
  require_positive(o.sel_block, "sel_block");
  require_positive(o.top_n, "top_n");
  require_positive(o.window, "window");
  if (o.n_init < 0) throw Error("n_init must be >= 0, got " + std::to_string(o.n_init));
  if (o.n_local < 0) throw Error("n_local must be >= 0, got " + std::to_string(o.n_local));
  if (o.block_len % o.stride != 0)
    throw Error("stride d=" + std::to_string(o.stride) + " must divide block_len l=" +
                std::to_string(o.block_len));
  if (o.sel_block % o.block_len != 0)
    throw Error("block_len l=" + std::to_string(o.block_len) + " must divide sel_block l'=" +
                std::to_string(o.sel_block));
  if (o.top_n < o.n_init + o.n_local)
    throw Error("top_n=" + std::to_string(o.top_n) + " must be >= n_init + n_local = " +
                std::to_string(o.n_init + o.n_local));
  if (!(o.scale >= 0.0) || !std::isfinite(o.scale))
    throw Error("scale must be finite and >= 0 (0 means 1/sqrt(d_k))");
  if (o.phi_hidden < 0) throw Error("phi_hidden must be >= 0 (0 means the head dim)");
  if (o.phi != PhiKind::mlp && o.phi != PhiKind::linear && o.phi != PhiKind::mean)
    throw Error("phi kind is not one of mlp, linear, mean");
}

double Config::scale_for(index_t d_k) const {
  return options_.scale > 0.0 ? options_.scale : 1.0 / std::sqrt(static_cast<double>(d_k));
}

index_t Config::phi_hidden_for(index_t dim) const {
  return options_.phi_hidden > 0 ? options_.phi_hidden : dim;
}

index_t Config::num_cmp_blocks(index_t seq_len) const {
  if (seq_len < options_.block_len) return 0;
  return (seq_len - options_.block_len) / options_.stride + 1;
}

index_t Config::num_sel_blocks(index_t seq_len) const {
  return (seq_len + options_.sel_block - 1) / options_.sel_block;
}

index_t Config::visible_cmp_blocks(index_t t) const { return num_cmp_blocks(t + 1); }

std::string Config::describe() const {
  std::ostringstream s;
  s << "l=" << options_.block_len << " d=" << options_.stride << " l'=" << options_.sel_block
    << " n=" << options_.top_n << " n_init=" << options_.n_init << " n_local=" << options_.n_local
    << " w=" << options_.window << " phi=" << phi_kind_name(options_.phi);
  if (options_.phi_hidden > 0) s << " hidden=" << options_.phi_hidden;
  if (options_.scale > 0) s << " scale=" << options_.scale;
  return s.str();
}

}  // namespace nsa
