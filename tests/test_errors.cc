// Invalid inputs: every one gets an nsa::Error whose message names the problem, from the
// fp32 CPU kernels and from the float64 reference alike (they share the validation in
// src/common/problem.h, and these tests keep them honest), and the output buffer is left
// untouched. Nothing crashes, aborts or writes garbage.
//
// Each case mutates a valid random problem in one way. The same mutation is applied to the
// float32 and float64 copies (generic lambdas), and each entry point is called on it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "nsa/nsa.h"
#include "test_cpu_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using cpu_test::small_options;
using testing::ProblemShape;
using testing::RandomDenseProblem;
using testing::RandomNsaProblem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kSentinel = 1234.5;  // what the output buffer holds before a call

// Runs `call` and expects an nsa::Error whose message contains every one of `needles`.
void expect_error(const std::function<void()>& call, const std::vector<std::string>& needles,
                  const std::string& where) {
  try {
    call();
    ADD_FAILURE() << where << ": no nsa::Error thrown (expected one naming '" << needles.front()
                  << "')";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& needle : needles)
      EXPECT_NE(message.find(needle), std::string::npos)
          << where << ": the message does not name '" << needle << "': " << message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << where << ": threw something other than nsa::Error: " << e.what();
  }
}

// An output buffer with room to spare (so that a wrong `out` shape cannot make a faulty
// implementation write out of bounds) filled with the sentinel.
template <class T>
struct OutBuffer {
  std::vector<T> data;
  TensorView<T> view;
  OutBuffer(const ProblemShape& s, index_t tokens) {
    data.assign(static_cast<size_t>(4 * s.batch * tokens * s.heads * s.d_v + 64), T(kSentinel));
    view = contiguous_view(data.data(), s.batch, tokens, s.heads, s.d_v);
  }
  bool untouched() const {
    for (T x : data)
      if (x != T(kSentinel)) return false;
    return true;
  }
};

ProblemShape small_shape(index_t batch = 2, index_t heads = 4, index_t kv_heads = 2) {
  ProblemShape s;
  s.batch = batch;
  s.tokens = 40;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.d_k = 16;
  s.d_v = 8;
  s.seed = 7;
  return s;
}

// The mutation gets (inputs, out view, buffers) of one precision; generic lambdas apply
// the same change to both.
struct NsaCase {
  ConfigOptions options = small_options();
  ProblemShape shape = small_shape();
  std::vector<std::int64_t> cu_seqlens;  // replaces the problem's, when non-empty
  std::optional<index_t> num_seqs;       // replaces the problem's, when set
};

template <class Mutate>
void expect_nsa_error(const NsaCase& c, Mutate mutate, const std::vector<std::string>& needles) {
  const Config config(c.options);
  RandomNsaProblem prob(config, c.shape);
  const index_t tokens = prob.shape().tokens;
  auto fix_seqs = [&](auto& in) {
    if (!c.cu_seqlens.empty()) in.seqs.cu_seqlens = c.cu_seqlens.data();
    if (c.num_seqs) in.seqs.num_seqs = *c.num_seqs;
  };
  {
    ThreadPool pool(2);
    auto in = prob.inputs32();
    fix_seqs(in);
    OutBuffer<float> out(prob.shape(), tokens);
    mutate(in, out.view, prob.buffers32());
    NsaSaved<float> saved;
    expect_error([&] { nsa_forward(config, in, out.view, &saved, pool); }, needles,
                 "nsa::nsa_forward");
    EXPECT_TRUE(out.untouched()) << "nsa::nsa_forward wrote to out before failing";
    EXPECT_TRUE(saved.lse.empty() && saved.sel_blocks.empty())
        << "nsa::nsa_forward filled `saved` before failing";
  }
  {
    auto in = prob.inputs64();
    fix_seqs(in);
    OutBuffer<double> out(prob.shape(), tokens);
    mutate(in, out.view, prob.buffers64());
    expect_error([&] { reference::nsa_forward(config, in, out.view, nullptr); }, needles,
                 "nsa::reference::nsa_forward");
    EXPECT_TRUE(out.untouched()) << "nsa::reference::nsa_forward wrote to out before failing";
  }
}

template <class Mutate>
void expect_nsa_error(Mutate mutate, const std::vector<std::string>& needles) {
  expect_nsa_error(NsaCase{}, mutate, needles);
}

// Passes through both entry points without error (the positive control for the checks above).
template <class Mutate>
void expect_nsa_ok(const NsaCase& c, Mutate mutate) {
  const Config config(c.options);
  RandomNsaProblem prob(config, c.shape);
  ThreadPool pool(2);
  auto in32 = prob.inputs32();
  OutBuffer<float> out32(prob.shape(), prob.shape().tokens);
  mutate(in32, out32.view, prob.buffers32());
  EXPECT_NO_THROW(nsa_forward(config, in32, out32.view, nullptr, pool));
  EXPECT_FALSE(out32.untouched());
  auto in64 = prob.inputs64();
  OutBuffer<double> out64(prob.shape(), prob.shape().tokens);
  mutate(in64, out64.view, prob.buffers64());
  EXPECT_NO_THROW(reference::nsa_forward(config, in64, out64.view, nullptr));
  EXPECT_FALSE(out64.untouched());
}

// ---- Config --------------------------------------------------------------------------

void expect_config_error(const std::function<void(ConfigOptions&)>& change,
                         const std::vector<std::string>& needles) {
  ConfigOptions o;
  change(o);
  expect_error([&] { Config c(o); }, needles, "Config");
}

TEST(ConfigErrors, ZeroOrNegativeSizes) {
  for (int bad : {0, -1, -32}) {
    SCOPED_TRACE(bad);
    expect_config_error([&](ConfigOptions& o) { o.block_len = bad; }, {"block_len", "positive"});
    expect_config_error([&](ConfigOptions& o) { o.stride = bad; }, {"stride", "positive"});
    expect_config_error([&](ConfigOptions& o) { o.sel_block = bad; }, {"sel_block", "positive"});
    expect_config_error([&](ConfigOptions& o) { o.top_n = bad; }, {"top_n", "positive"});
    expect_config_error([&](ConfigOptions& o) { o.window = bad; }, {"window", "positive"});
  }
  expect_config_error([](ConfigOptions& o) { o.n_init = -1; }, {"n_init"});
  expect_config_error([](ConfigOptions& o) { o.n_local = -1; }, {"n_local"});
  expect_config_error([](ConfigOptions& o) { o.phi_hidden = -1; }, {"phi_hidden"});
}

TEST(ConfigErrors, StrideMustDivideBlockLen) {
  expect_config_error([](ConfigOptions& o) { o.stride = 12; }, {"stride", "block_len", "12"});
  expect_config_error([](ConfigOptions& o) { o.stride = 64; }, {"stride", "block_len"});
}

TEST(ConfigErrors, BlockLenMustDivideSelBlock) {
  expect_config_error([](ConfigOptions& o) { o.sel_block = 48; }, {"sel_block", "block_len", "48"});
  expect_config_error([](ConfigOptions& o) { o.sel_block = 16; }, {"sel_block", "block_len"});
}

TEST(ConfigErrors, TopNBelowForcedBlocks) {
  expect_config_error(
      [](ConfigOptions& o) {
        o.top_n = 2;
        o.n_init = 1;
        o.n_local = 2;
      },
      {"top_n", "n_init + n_local"});
  expect_config_error(
      [](ConfigOptions& o) {
        o.top_n = 4;
        o.n_init = 3;
        o.n_local = 2;
      },
      {"top_n"});
}

TEST(ConfigErrors, BadScale) {
  expect_config_error([](ConfigOptions& o) { o.scale = -0.5; }, {"scale"});
  expect_config_error([](ConfigOptions& o) { o.scale = kNaN; }, {"scale"});
  expect_config_error([](ConfigOptions& o) { o.scale = kInf; }, {"scale"});
}

TEST(ConfigErrors, UnknownPhiKind) {
  expect_error([] { parse_phi_kind("max"); }, {"max", "phi"}, "parse_phi_kind");
  expect_config_error([](ConfigOptions& o) { o.phi = static_cast<PhiKind>(7); }, {"phi"});
}

TEST(ConfigErrors, BoundaryValuesAreAccepted) {  // the checks above reject only what is invalid
  ConfigOptions o;
  o.top_n = 3;  // == n_init + n_local
  o.stride = 32;
  o.sel_block = 32;
  o.n_init = 0;
  o.window = 1;
  EXPECT_NO_THROW(Config{o});
}

// ---- NSA forward: shapes -------------------------------------------------------------

TEST(NsaErrors, KeysWithWrongTokenCount) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_slc.shape[1] -= 1; }, {"k_slc", "shape"});
}

TEST(NsaErrors, KeysWithWrongBatch) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_win.shape[0] = 1; }, {"k_win", "shape"});
}

TEST(NsaErrors, KeyDimDifferentFromQuery) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_slc.shape[3] = 8; }, {"k_slc", "[2,40,2,16]"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_win.shape[3] = 8; }, {"k_win"});
}

TEST(NsaErrors, ValueDimDifferentAcrossBranches) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_win.shape[3] = 4; }, {"v_win"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_slc.shape[3] = 4; }, {"v_slc"});
}

TEST(NsaErrors, KvHeadsDifferentAcrossBranches) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_cmp.shape[2] = 1; }, {"v_cmp"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_slc.shape[2] = 1; }, {"k_slc"});
}

TEST(NsaErrors, OutputShape) {
  expect_nsa_error([](auto&, auto& out, auto&) { out.shape[1] += 1; }, {"out", "shape"});
  expect_nsa_error([](auto&, auto& out, auto&) { out.shape[2] = 2; }, {"out", "shape"});
  expect_nsa_error([](auto&, auto& out, auto&) { out.shape[3] = 4; }, {"out", "shape"});
}

TEST(NsaErrors, GatesShape) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.gates.shape[3] = 2; }, {"gates"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.gates.shape[2] = 2; }, {"gates"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.gates.shape[1] = 39; }, {"gates"});
}

TEST(NsaErrors, HeadsNotAMultipleOfKvHeads) {
  NsaCase c;
  c.shape = small_shape(1, 3, 2);
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"H = 3", "H_kv = 2"});
  c.shape = small_shape(1, 4, 3);
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"H = 4", "H_kv = 3"});
}

TEST(NsaErrors, ZeroOrNegativeSizesInViews) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.q.shape[1] = 0; }, {"q:", "positive"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.q.shape[0] = -2; }, {"q:", "positive"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_cmp.shape[3] = 0; }, {"k_cmp", "positive"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_cmp.shape[2] = 0; }, {"k_cmp", "positive"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_cmp.shape[3] = -1; }, {"v_cmp", "positive"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.gates.shape[2] = 0; }, {"gates", "positive"});
  expect_nsa_error([](auto&, auto& out, auto&) { out.shape[1] = 0; }, {"out", "positive"});
}

TEST(NsaErrors, NegativeStrides) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_slc.stride[1] = -in.v_slc.stride[1]; },
                   {"v_slc", "negative"});
}

TEST(NsaErrors, OverlappingStrides) {
  // heads closer than a row of dim: two heads share elements
  expect_nsa_error([](auto& in, auto&, auto&) { in.q.stride[2] = 8; }, {"q:", "overlap"});
  // tokens closer than all heads of a token
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_slc.stride[1] = in.k_slc.stride[2]; },
                   {"k_slc", "overlap"});
  // batch items closer than a sequence (B = 2)
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_win.stride[0] = in.v_win.stride[1]; },
                   {"v_win", "overlap"});
  // the output aliasing itself would be the worst: written by several rows at once
  expect_nsa_error([](auto&, auto& out, auto&) { out.stride[1] = 0; }, {"out", "overlap"});
}

// ---- NSA forward: sequences ----------------------------------------------------------

NsaCase varlen_case(std::vector<std::int64_t> seqlens) {
  NsaCase c;
  c.shape = small_shape(1);
  c.shape.seqlens = std::move(seqlens);
  return c;
}

TEST(NsaErrors, CuSeqlensNotMonotone) {
  NsaCase c = varlen_case({10, 20, 10});  // T = 40
  c.cu_seqlens = {0, 25, 20, 40};
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"cu_seqlens", "non-decreasing", "cu_seqlens[2]"});
}

TEST(NsaErrors, CuSeqlensLastEntryNotT) {
  NsaCase c = varlen_case({10, 20, 10});
  c.cu_seqlens = {0, 10, 30, 39};
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"cu_seqlens", "39", "T = 40"});
  c.cu_seqlens = {0, 10, 30, 41};
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"cu_seqlens", "41"});
}

TEST(NsaErrors, CuSeqlensFirstEntryNotZero) {
  NsaCase c = varlen_case({10, 20, 10});
  c.cu_seqlens = {5, 10, 30, 40};
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"cu_seqlens[0]"});
}

TEST(NsaErrors, CuSeqlensWithoutSequences) {
  NsaCase c = varlen_case({10, 30});
  c.num_seqs = 0;
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"num_seqs"});
  c.num_seqs = -3;
  expect_nsa_error(c, [](auto&, auto&, auto&) {}, {"num_seqs"});
}

TEST(NsaErrors, NumSeqsWithoutCuSeqlens) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.seqs.num_seqs = 2; }, {"cu_seqlens", "null"});
}

TEST(NsaErrors, VarlenWithBatchAboveOne) {
  static const std::vector<std::int64_t> cu = {0, 15, 40};
  expect_nsa_error(
      [](auto& in, auto&, auto&) {
        in.seqs.cu_seqlens = cu.data();
        in.seqs.num_seqs = 2;
      },
      {"cu_seqlens", "B = 2"});
}

// ---- NSA forward: null pointers and phi weights ----------------------------------------

TEST(NsaErrors, NullDataPointers) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.q.data = nullptr; }, {"q:", "null"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_cmp.data = nullptr; }, {"k_cmp", "null"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_cmp.data = nullptr; }, {"v_cmp", "null"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_slc.data = nullptr; }, {"k_slc", "null"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_slc.data = nullptr; }, {"v_slc", "null"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.k_win.data = nullptr; }, {"k_win", "null"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.v_win.data = nullptr; }, {"v_win", "null"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.gates.data = nullptr; }, {"gates", "null"});
  expect_nsa_error([](auto&, auto& out, auto&) { out.data = nullptr; }, {"out", "null"});
}

TEST(NsaErrors, NullMlpPhiWeights) {
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_k.pe = nullptr; }, {"phi_k.pe", "mlp"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_k.w1 = nullptr; }, {"phi_k.w1", "mlp"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_k.b1 = nullptr; }, {"phi_k.b1"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_k.w2 = nullptr; }, {"phi_k.w2"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_k.b2 = nullptr; }, {"phi_k.b2"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_v.pe = nullptr; }, {"phi_v.pe"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_v.w1 = nullptr; }, {"phi_v.w1"});
  expect_nsa_error([](auto& in, auto&, auto&) { in.phi_v.b2 = nullptr; }, {"phi_v.b2"});
}

TEST(NsaErrors, NullLinearPhiWeights) {
  NsaCase c;
  c.options = small_options(PhiKind::linear);
  expect_nsa_error(c, [](auto& in, auto&, auto&) { in.phi_k.w = nullptr; }, {"phi_k.w ", "linear"});
  expect_nsa_error(c, [](auto& in, auto&, auto&) { in.phi_v.w = nullptr; }, {"phi_v.w ", "linear"});
  expect_nsa_error(c, [](auto& in, auto&, auto&) { in.phi_v.pe = nullptr; }, {"phi_v.pe", "linear"});
}

TEST(NsaErrors, UnusedPhiWeightsMayBeNull) {  // the positive control: only needed weights are required
  NsaCase c;
  c.options = small_options(PhiKind::mean);
  expect_nsa_ok(c, [](auto& in, auto&, auto&) { in.phi_k = {}; in.phi_v = {}; });
  c.options = small_options(PhiKind::linear);
  expect_nsa_ok(c, [](auto& in, auto&, auto&) {
    in.phi_k.w1 = in.phi_k.b1 = in.phi_k.w2 = in.phi_k.b2 = nullptr;
    in.phi_v.w1 = in.phi_v.b1 = in.phi_v.w2 = in.phi_v.b2 = nullptr;
  });
}

TEST(NsaErrors, SharedKvIsNotAnError) {  // the same view for several branches is the cheap mode
  expect_nsa_ok(NsaCase{}, [](auto& in, auto&, auto&) {
    in.k_slc = in.k_win = in.k_cmp;
    in.v_slc = in.v_win = in.v_cmp;
  });
}

// ---- NSA forward: non-finite values ----------------------------------------------------

TEST(NsaErrors, NonFiniteInputs) {
  for (double bad : {kNaN, kInf, -kInf}) {
    SCOPED_TRACE(bad);
    expect_nsa_error([&](auto&, auto&, auto& b) { b.q[37] = bad; }, {"q:", "non-finite"});
    expect_nsa_error([&](auto&, auto&, auto& b) { b.k_cmp.back() = bad; }, {"k_cmp", "non-finite"});
    expect_nsa_error([&](auto&, auto&, auto& b) { b.v_cmp[3] = bad; }, {"v_cmp", "non-finite"});
    expect_nsa_error([&](auto&, auto&, auto& b) { b.k_slc[100] = bad; }, {"k_slc", "non-finite"});
    expect_nsa_error([&](auto&, auto&, auto& b) { b.v_slc[0] = bad; }, {"v_slc", "non-finite"});
    expect_nsa_error([&](auto&, auto&, auto& b) { b.k_win[5] = bad; }, {"k_win", "non-finite"});
    expect_nsa_error([&](auto&, auto&, auto& b) { b.v_win[9] = bad; }, {"v_win", "non-finite"});
    expect_nsa_error([&](auto&, auto&, auto& b) { b.gates[11] = bad; }, {"gates", "non-finite"});
  }
}

TEST(NsaErrors, NonFinitePhiWeights) {
  expect_nsa_error([](auto&, auto&, auto& b) { b.phi_k.w1[10] = kNaN; }, {"phi_k.w1", "non-finite"});
  expect_nsa_error([](auto&, auto&, auto& b) { b.phi_k.pe[0] = kInf; }, {"phi_k.pe", "non-finite"});
  expect_nsa_error([](auto&, auto&, auto& b) { b.phi_v.b2.back() = kNaN; }, {"phi_v.b2", "non-finite"});
  NsaCase c;
  c.options = small_options(PhiKind::linear);
  expect_nsa_error(c, [](auto&, auto&, auto& b) { b.phi_v.w[7] = -kInf; }, {"phi_v.w", "non-finite"});
}

// A copy of q with one padding column per head (head stride d_k + 1), padding = `pad`.
template <class T>
TensorView<const T> padded_copy(const TensorView<const T>& x, std::vector<T>& storage, T pad) {
  const index_t B = x.shape[0], T_ = x.shape[1], H = x.shape[2], D = x.shape[3];
  storage.assign(static_cast<size_t>(B * T_ * H * (D + 1)), pad);
  TensorView<T> y{storage.data(), x.shape, {T_ * H * (D + 1), H * (D + 1), D + 1}};
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T_; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < D; ++c) y.at(b, t, h, c) = x.at(b, t, h, c);
  return y.as_const();
}

TEST(NsaErrors, NonFiniteValueOutsideTheViewIsIgnored) {
  // NaN in the padding between heads is not part of the tensor: no error, finite output.
  const Config config(small_options());
  RandomNsaProblem prob(config, small_shape());
  ThreadPool pool(2);
  std::vector<float> q32;
  auto in32 = prob.inputs32();
  in32.q = padded_copy(in32.q, q32, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> out32;
  EXPECT_NO_THROW(nsa_forward(config, in32, prob.out_view(out32), nullptr, pool));
  for (float x : out32) ASSERT_TRUE(std::isfinite(x));
  std::vector<double> q64;
  auto in64 = prob.inputs64();
  in64.q = padded_copy(in64.q, q64, kNaN);
  std::vector<double> out64;
  EXPECT_NO_THROW(reference::nsa_forward(config, in64, prob.out_view(out64), nullptr));
  for (double x : out64) ASSERT_TRUE(std::isfinite(x));
}

// ---- dense forward ---------------------------------------------------------------------

// Owned copies of a dense problem's q, k, v, so that a case can plant a NaN in them.
template <class T>
struct DenseCopy {
  std::vector<T> q, k, v;
  explicit DenseCopy(DenseInputs<T>& in) {
    auto copy = [](TensorView<const T>& view, std::vector<T>& to) {
      to.assign(view.data, view.data + view.shape[0] * view.shape[1] * view.shape[2] * view.shape[3]);
      view.data = to.data();
    };
    copy(in.q, q);
    copy(in.k, k);
    copy(in.v, v);
  }
};

template <class Mutate>
void expect_dense_error(const ProblemShape& shape, Mutate mutate,
                        const std::vector<std::string>& needles) {
  RandomDenseProblem prob(shape);
  index_t tokens = shape.tokens;
  if (!shape.seqlens.empty()) {
    tokens = 0;
    for (auto n : shape.seqlens) tokens += n;
  }
  ProblemShape out_shape = shape;
  if (!shape.seqlens.empty()) out_shape.batch = 1;
  {
    ThreadPool pool(2);
    auto in = prob.inputs32();
    DenseCopy<float> copy(in);
    OutBuffer<float> out(out_shape, tokens);
    std::vector<float> lse(static_cast<size_t>(4 * out_shape.batch * tokens * shape.heads), float(kSentinel));
    mutate(in, out.view, copy);
    expect_error([&] { dense_forward(in, out.view, lse.data(), pool); }, needles, "nsa::dense_forward");
    EXPECT_TRUE(out.untouched()) << "nsa::dense_forward wrote to out before failing";
    for (float x : lse) ASSERT_EQ(x, float(kSentinel)) << "nsa::dense_forward wrote lse before failing";
  }
  {
    auto in = prob.inputs64();
    DenseCopy<double> copy(in);
    OutBuffer<double> out(out_shape, tokens);
    mutate(in, out.view, copy);
    expect_error([&] { reference::dense_forward(in, out.view, nullptr); }, needles,
                 "nsa::reference::dense_forward");
    EXPECT_TRUE(out.untouched()) << "nsa::reference::dense_forward wrote to out before failing";
  }
}

template <class Mutate>
void expect_dense_error(Mutate mutate, const std::vector<std::string>& needles) {
  expect_dense_error(small_shape(), mutate, needles);
}

TEST(DenseErrors, Shapes) {
  expect_dense_error([](auto& in, auto&, auto&) { in.k.shape[1] = 39; }, {"k:", "shape"});
  expect_dense_error([](auto& in, auto&, auto&) { in.k.shape[3] = 8; }, {"k:", "shape"});
  expect_dense_error([](auto& in, auto&, auto&) { in.v.shape[2] = 1; }, {"v:", "shape"});
  expect_dense_error([](auto& in, auto&, auto&) { in.v.shape[0] = 1; }, {"v:", "shape"});
  expect_dense_error([](auto&, auto& out, auto&) { out.shape[3] = 16; }, {"out"});
  expect_dense_error([](auto&, auto& out, auto&) { out.shape[1] = 41; }, {"out", "shape"});
}

TEST(DenseErrors, HeadsNotAMultipleOfKvHeads) {
  expect_dense_error(small_shape(1, 5, 2), [](auto&, auto&, auto&) {}, {"H = 5", "H_kv = 2"});
}

TEST(DenseErrors, ZeroSizesNullPointersAndStrides) {
  expect_dense_error([](auto& in, auto&, auto&) { in.q.shape[2] = 0; }, {"q:", "positive"});
  expect_dense_error([](auto& in, auto&, auto&) { in.v.shape[3] = -4; }, {"v:", "positive"});
  expect_dense_error([](auto& in, auto&, auto&) { in.q.data = nullptr; }, {"q:", "null"});
  expect_dense_error([](auto& in, auto&, auto&) { in.k.data = nullptr; }, {"k:", "null"});
  expect_dense_error([](auto& in, auto&, auto&) { in.v.data = nullptr; }, {"v:", "null"});
  expect_dense_error([](auto&, auto& out, auto&) { out.data = nullptr; }, {"out", "null"});
  expect_dense_error([](auto& in, auto&, auto&) { in.k.stride[2] = 1; }, {"k:", "overlap"});
  expect_dense_error([](auto& in, auto&, auto&) { in.q.stride[0] = 3; }, {"q:", "overlap"});
  expect_dense_error([](auto& in, auto&, auto&) { in.v.stride[1] = -in.v.stride[1]; }, {"v:", "negative"});
}

TEST(DenseErrors, Scale) {
  expect_dense_error([](auto& in, auto&, auto&) { in.scale = -1.0; }, {"scale"});
  expect_dense_error([](auto& in, auto&, auto&) { in.scale = kNaN; }, {"scale"});
  expect_dense_error([](auto& in, auto&, auto&) { in.scale = kInf; }, {"scale"});
}

TEST(DenseErrors, NonFiniteInputs) {
  for (double bad : {kNaN, kInf, -kInf}) {
    SCOPED_TRACE(bad);
    expect_dense_error([&](auto&, auto&, auto& c) { c.q[50] = bad; }, {"q:", "non-finite"});
    expect_dense_error([&](auto&, auto&, auto& c) { c.k[0] = bad; }, {"k:", "non-finite"});
    expect_dense_error([&](auto&, auto&, auto& c) { c.v.back() = bad; }, {"v:", "non-finite"});
  }
}

TEST(DenseErrors, Sequences) {
  ProblemShape varlen = small_shape(1);
  varlen.seqlens = {10, 30};
  static const std::vector<std::int64_t> not_monotone = {0, 30, 10, 40};
  static const std::vector<std::int64_t> short_last = {0, 10, 30};
  static const std::vector<std::int64_t> two = {0, 10, 40};
  expect_dense_error(varlen, [](auto& in, auto&, auto&) { in.seqs = {not_monotone.data(), 3}; },
                     {"cu_seqlens", "non-decreasing"});
  expect_dense_error(varlen, [](auto& in, auto&, auto&) { in.seqs = {short_last.data(), 2}; },
                     {"cu_seqlens", "T = 40"});
  expect_dense_error(varlen, [](auto& in, auto&, auto&) { in.seqs.num_seqs = 0; }, {"num_seqs"});
  expect_dense_error([](auto& in, auto&, auto&) { in.seqs = {two.data(), 2}; }, {"cu_seqlens", "B = 2"});
  expect_dense_error([](auto& in, auto&, auto&) { in.seqs = {nullptr, 2}; }, {"cu_seqlens", "null"});
}

}  // namespace
}  // namespace nsa
