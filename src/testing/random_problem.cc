#include "testing/random_problem.h"

#include <limits>
#include <sstream>

namespace nsa::testing {

namespace {

std::vector<double> normal(std::mt19937_64& rng, index_t n, double scale = 1.0) {
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) x = scale * dist(rng);
  return v;
}

// Rounds every value to float32 in place and returns the float32 copy.
std::vector<float> round_to_f32(std::vector<double>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    f[i] = static_cast<float>(v[i]);
    v[i] = f[i];
  }
  return f;
}

void fill_phi(std::mt19937_64& rng, const Config& config, index_t dim, PhiBuffers<double>& p) {
  const index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
  for (PhiField f : kPhiFields)
    phi_field(p, f) = normal(rng, phi_field_size(f, l, dim, hidden), phi_field_scale(f, l, dim, hidden));
}

PhiBuffers<float> round_phi(PhiBuffers<double>& p) {
  PhiBuffers<float> out;
  for (PhiField f : kPhiFields) phi_field(out, f) = round_to_f32(phi_field(p, f));
  return out;
}

std::vector<std::int64_t> prefix_sums(const std::vector<std::int64_t>& lens) {
  std::vector<std::int64_t> cu{0};
  for (auto n : lens) cu.push_back(cu.back() + n);
  return cu;
}

template <class T>
TensorView<const T> view(const std::vector<T>& v, const ProblemShape& s, index_t heads, index_t dim) {
  return contiguous_view(v.data(), s.batch, s.tokens, heads, dim);
}

}  // namespace

double phi_field_scale(PhiField f, index_t l, index_t dim, index_t hidden) {
  if (phi_field_is_matrix(f))
    return 1.0 / std::sqrt(static_cast<double>(phi_field_shape(f, l, dim, hidden)[1]));
  return f == PhiField::pe ? 0.5 : 0.1;
}

std::string ProblemShape::describe() const {
  std::ostringstream o;
  o << "B=" << batch << " T=" << tokens << " H=" << heads << " H_kv=" << kv_heads << " d_k=" << d_k
    << " d_v=" << d_v << (shared_kv ? " shared" : " independent");
  if (!seqlens.empty()) {
    o << " varlen=";
    for (size_t i = 0; i < seqlens.size(); ++i) o << (i ? "," : "") << seqlens[i];
  }
  return o.str();
}

RandomNsaProblem::RandomNsaProblem(const Config& config, const ProblemShape& shape)
    : config_(config), shape_(shape) {
  if (!shape_.seqlens.empty()) {
    shape_.batch = 1;
    cu_seqlens_ = prefix_sums(shape_.seqlens);
    shape_.tokens = cu_seqlens_.back();
  }
  std::mt19937_64 rng(shape_.seed);
  const index_t bt = shape_.batch * shape_.tokens;
  f64_.q = normal(rng, bt * shape_.heads * shape_.d_k);
  f64_.k_cmp = normal(rng, bt * shape_.kv_heads * shape_.d_k);
  f64_.v_cmp = normal(rng, bt * shape_.kv_heads * shape_.d_v);
  if (shape_.shared_kv) {
    f64_.k_slc = f64_.k_win = f64_.k_cmp;
    f64_.v_slc = f64_.v_win = f64_.v_cmp;
  } else {
    f64_.k_slc = normal(rng, bt * shape_.kv_heads * shape_.d_k);
    f64_.v_slc = normal(rng, bt * shape_.kv_heads * shape_.d_v);
    f64_.k_win = normal(rng, bt * shape_.kv_heads * shape_.d_k);
    f64_.v_win = normal(rng, bt * shape_.kv_heads * shape_.d_v);
  }
  std::uniform_real_distribution<double> gate(0.05, 0.95);
  f64_.gates.resize(static_cast<size_t>(bt * shape_.heads * 3));
  for (auto& g : f64_.gates) g = gate(rng);
  fill_phi(rng, config_, shape_.d_k, f64_.phi_k);
  fill_phi(rng, config_, shape_.d_v, f64_.phi_v);
  sync32();
}

void RandomNsaProblem::sync32() {
  auto& d = f64_;
  f32_.q = round_to_f32(d.q);
  f32_.k_cmp = round_to_f32(d.k_cmp);
  f32_.v_cmp = round_to_f32(d.v_cmp);
  f32_.k_slc = round_to_f32(d.k_slc);
  f32_.v_slc = round_to_f32(d.v_slc);
  f32_.k_win = round_to_f32(d.k_win);
  f32_.v_win = round_to_f32(d.v_win);
  f32_.gates = round_to_f32(d.gates);
  f32_.phi_k = round_phi(d.phi_k);
  f32_.phi_v = round_phi(d.phi_v);
}

template <class T>
NsaInputs<T> RandomNsaProblem::make_inputs(const NsaBuffers<T>& b) const {
  const auto& s = shape_;
  NsaInputs<T> in;
  in.q = view(b.q, s, s.heads, s.d_k);
  in.k_cmp = view(b.k_cmp, s, s.kv_heads, s.d_k);
  in.v_cmp = view(b.v_cmp, s, s.kv_heads, s.d_v);
  // Shared K/V: the three branches get the very same views (same pointers).
  in.k_slc = s.shared_kv ? in.k_cmp : view(b.k_slc, s, s.kv_heads, s.d_k);
  in.v_slc = s.shared_kv ? in.v_cmp : view(b.v_slc, s, s.kv_heads, s.d_v);
  in.k_win = s.shared_kv ? in.k_cmp : view(b.k_win, s, s.kv_heads, s.d_k);
  in.v_win = s.shared_kv ? in.v_cmp : view(b.v_win, s, s.kv_heads, s.d_v);
  in.gates = view(b.gates, s, s.heads, 3);
  in.phi_k = b.phi_k.weights();
  in.phi_v = b.phi_v.weights();
  if (!cu_seqlens_.empty()) in.seqs = {cu_seqlens_.data(), static_cast<index_t>(s.seqlens.size())};
  return in;
}

template NsaInputs<double> RandomNsaProblem::make_inputs(const NsaBuffers<double>&) const;
template NsaInputs<float> RandomNsaProblem::make_inputs(const NsaBuffers<float>&) const;

TensorView<double> RandomNsaProblem::out_view(std::vector<double>& out) const {
  out.assign(static_cast<size_t>(out_size()), std::numeric_limits<double>::quiet_NaN());
  return contiguous_view(out.data(), shape_.batch, shape_.tokens, shape_.heads, shape_.d_v);
}

TensorView<float> RandomNsaProblem::out_view(std::vector<float>& out) const {
  out.assign(static_cast<size_t>(out_size()), std::numeric_limits<float>::quiet_NaN());
  return contiguous_view(out.data(), shape_.batch, shape_.tokens, shape_.heads, shape_.d_v);
}

RandomDenseProblem::RandomDenseProblem(const ProblemShape& shape) : shape_(shape) {
  if (!shape_.seqlens.empty()) {
    shape_.batch = 1;
    cu_seqlens_ = prefix_sums(shape_.seqlens);
    shape_.tokens = cu_seqlens_.back();
  }
  std::mt19937_64 rng(shape_.seed);
  const index_t bt = shape_.batch * shape_.tokens;
  q64_ = normal(rng, bt * shape_.heads * shape_.d_k);
  k64_ = normal(rng, bt * shape_.kv_heads * shape_.d_k);
  v64_ = normal(rng, bt * shape_.kv_heads * shape_.d_v);
  q32_ = round_to_f32(q64_);
  k32_ = round_to_f32(k64_);
  v32_ = round_to_f32(v64_);
}

DenseInputs<double> RandomDenseProblem::inputs64() const {
  DenseInputs<double> in{view(q64_, shape_, shape_.heads, shape_.d_k),
                         view(k64_, shape_, shape_.kv_heads, shape_.d_k),
                         view(v64_, shape_, shape_.kv_heads, shape_.d_v)};
  if (!cu_seqlens_.empty()) in.seqs = {cu_seqlens_.data(), static_cast<index_t>(shape_.seqlens.size())};
  return in;
}

DenseInputs<float> RandomDenseProblem::inputs32() const {
  DenseInputs<float> in{view(q32_, shape_, shape_.heads, shape_.d_k),
                        view(k32_, shape_, shape_.kv_heads, shape_.d_k),
                        view(v32_, shape_, shape_.kv_heads, shape_.d_v)};
  if (!cu_seqlens_.empty()) in.seqs = {cu_seqlens_.data(), static_cast<index_t>(shape_.seqlens.size())};
  return in;
}

TensorView<double> RandomDenseProblem::out_view(std::vector<double>& out) const {
  out.assign(static_cast<size_t>(out_size()), std::numeric_limits<double>::quiet_NaN());
  return contiguous_view(out.data(), shape_.batch, shape_.tokens, shape_.heads, shape_.d_v);
}

TensorView<float> RandomDenseProblem::out_view(std::vector<float>& out) const {
  out.assign(static_cast<size_t>(out_size()), std::numeric_limits<float>::quiet_NaN());
  return contiguous_view(out.data(), shape_.batch, shape_.tokens, shape_.heads, shape_.d_v);
}

template <class X>
static double relative_error_impl(const X* x, const double* ref, index_t n) {
  double num = 0.0, den = 0.0;
  for (index_t i = 0; i < n; ++i) {
    const double xi = static_cast<double>(x[i]);
    if (!std::isfinite(xi)) return std::numeric_limits<double>::infinity();
    num += (xi - ref[i]) * (xi - ref[i]);
    den += ref[i] * ref[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

double relative_error(const float* x, const double* ref, index_t n) { return relative_error_impl(x, ref, n); }
double relative_error(const double* x, const double* ref, index_t n) { return relative_error_impl(x, ref, n); }

}  // namespace nsa::testing
