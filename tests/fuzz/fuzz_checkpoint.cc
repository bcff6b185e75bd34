// libFuzzer: model checkpoints (safetensors, src/model/checkpoint) from untrusted bytes:
// the file parser, the metadata's model config, the tensors' shapes. Either a model or a
// nsa::Error.
#include "fuzz_util.h"
#include "model/training/checkpoint_io.h"
#include "nsa/error.h"

std::vector<std::string> nsa_fuzz_seeds() {
  nsa::model::ModelConfig c;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_k = 4;
  c.d_v = 4;
  c.mlp_hidden = 8;
  c.nsa.block_len = 4;
  c.nsa.stride = 2;
  c.nsa.sel_block = 4;
  c.nsa.top_n = 2;
  c.nsa.n_init = 1;
  c.nsa.n_local = 1;
  c.nsa.window = 4;
  nsa::model::Model<float> m(c);
  m.init(1);
  const std::string path = nsa::fuzz::scratch_dir() + "/nsa_fuzz_seed_ckpt";
  nsa::model::save_checkpoint(path, m, nullptr);
  std::string bytes = nsa::fuzz::read_all(path);
  std::remove(path.c_str());
  return {bytes};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = nsa::fuzz::write_input(data, size);
  try {
    const nsa::model::Model<float> m = nsa::model::load_model(path);
    if (m.num_params() == 0) __builtin_trap();
  } catch (const nsa::Error&) {
  }
  return 0;
}
