#include "model_options.h"

#include <CLI/CLI.hpp>

namespace nsa::cli {

void add_model_options(CLI::App* sub, model::ModelConfig* c, std::string* attention, std::string* phi) {
  c->nsa = model::default_small_nsa_options();
  *attention = model::attention_kind_name(c->attention);
  *phi = phi_kind_name(c->nsa.phi);
  sub->add_option("--attention", *attention, "attention kind: nsa, full or window")->capture_default_str();
  sub->add_option("--d-model", c->d_model, "model width")->capture_default_str();
  sub->add_option("--layers", c->n_layers, "transformer layers")->capture_default_str();
  sub->add_option("--heads", c->n_heads, "query heads H")->capture_default_str();
  sub->add_option("--kv-heads", c->n_kv_heads, "key/value heads H_kv")->capture_default_str();
  sub->add_option("--dk", c->d_k, "query/key head dim")->capture_default_str();
  sub->add_option("--dv", c->d_v, "value head dim")->capture_default_str();
  sub->add_option("--mlp-hidden", c->mlp_hidden, "SwiGLU hidden size")->capture_default_str();
  sub->add_option("--token-shift", c->token_shift,
                  "attention projections also read the S previous tokens (a short causal conv; 0: none)")
      ->capture_default_str();
  sub->add_option("--init-std", c->init_std, "std of the normal init of the matrices")->capture_default_str();
  sub->add_flag("--independent-kv", c->independent_kv, "separate K/V projections per NSA branch");
  sub->add_option("--block-len", c->nsa.block_len, "NSA compression block length l")->capture_default_str();
  sub->add_option("--stride", c->nsa.stride, "NSA compression stride d")->capture_default_str();
  sub->add_option("--sel-block", c->nsa.sel_block, "NSA selection block length l'")->capture_default_str();
  sub->add_option("--top-n", c->nsa.top_n, "NSA selected blocks per query n")->capture_default_str();
  sub->add_option("--window", c->nsa.window, "NSA sliding window w")->capture_default_str();
  sub->add_option("--phi", *phi, "NSA compression function: mlp, linear or mean")->capture_default_str();
}

model::ModelConfig finish_model_config(model::ModelConfig config, const std::string& attention,
                                       const std::string& phi) {
  config.attention = model::parse_attention_kind(attention);
  config.nsa.phi = parse_phi_kind(phi);
  config.validate();
  return config;
}

}  // namespace nsa::cli
