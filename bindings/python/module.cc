// nsa._core: the adapter between DLPack arrays (torch tensors, numpy arrays) and the nsa
// library. It checks every array (device, dtype, rank, strides, sizes of the phi
// parameters), wraps it in a TensorView over the caller's memory (no copies), and
// dispatches on dtype:
//   float32  -> the fp32 CPU kernels (nsa::nsa_forward / nsa::nsa_backward, threaded)
//   bfloat16 -> the bf16-storage CPU kernels (every input bf16; out, d_out and the
//               gradients float32: the Python layer rounds them to bf16)
//   float64  -> the float64 reference (nsa::reference::*), the spec in code
// The Python package (python/nsa) builds the friendly API on top of this module.
//
// Errors: nsa::Error becomes nsa.Error (a ValueError); a wrong dtype is a TypeError.
// Nothing here trusts the caller: any size the library reads through a raw pointer is
// checked first, so a bad input raises and never crashes the interpreter.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "nsa/decode.h"
#include "nsa/nsa.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace nsa::python {

using Array = nb::ndarray<nb::ro>;  // any dtype, device and rank; read-only arrays accepted
using MutArray = nb::ndarray<>;     // written by the library: must be writable

// ---- the thread pool: one per process, resized by set_num_threads ----------------------
std::mutex g_pool_mutex;  // one fp32 call at a time uses the pool
std::unique_ptr<ThreadPool> g_pool;
int g_threads = 0;  // 0: hardware concurrency

ThreadPool& pool_locked() {
  if (!g_pool) g_pool = std::make_unique<ThreadPool>(g_threads);
  return *g_pool;
}

void set_num_threads(int threads) {
  if (threads < 0) throw Error("set_num_threads: threads must be >= 0 (0 means all cores)");
  nb::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  g_threads = threads;
  g_pool.reset();
}

int get_num_threads() {
  nb::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  return pool_locked().size();
}

// ---- array checks --------------------------------------------------------------------
std::string dtype_name(nb::dlpack::dtype t) {
  const char* kind = "?";
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: kind = "int"; break;
    case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
    case nb::dlpack::dtype_code::Float: kind = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: kind = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
    case nb::dlpack::dtype_code::Bool: return "bool";
    default: break;
  }
  return kind + std::to_string(t.bits);
}

const char* device_name(int device_type) {
  switch (device_type) {
    case nb::device::cpu::value: return "cpu";
    case nb::device::cuda::value: return "cuda";
    case nb::device::cuda_host::value: return "cuda_host";
    case nb::device::cuda_managed::value: return "cuda_managed";
    case nb::device::rocm::value: return "rocm";
    case nb::device::metal::value: return "metal";
    default: return "a non-CPU device";
  }
}

template <class A>
void check_cpu(const A& a, const std::string& name) {
  if (a.device_type() != nb::device::cpu::value)
    throw Error(name + " is on " + device_name(a.device_type()) +
                "; this build of nsa runs on the CPU only (built with NSA_CUDA=OFF): move it "
                "to the CPU first");
}

// The DLPack dtype of an element type; nsa::bf16 is DLPack's bfloat16 (code Bfloat, 16 bits).
template <class T>
nb::dlpack::dtype dtype_of() {
  if constexpr (std::is_same_v<T, bf16>)
    return {static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
  else
    return nb::dtype<T>();
}

template <class T, class A>
void check_dtype(const A& a, const std::string& name) {
  if (a.dtype() != dtype_of<T>())
    throw nb::type_error((name + " has dtype " + dtype_name(a.dtype()) + ", expected " +
                          dtype_name(dtype_of<T>()) +
                          " (all floating-point inputs of one call share q's dtype)")
                             .c_str());
}

std::string shape_of(const nb::ndarray<nb::ro>& a) {
  std::string s = "[";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? "," : "") + std::to_string(a.shape(i));
  return s + "]";
}
std::string shape_of(const nb::ndarray<>& a) {
  std::string s = "[";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? "," : "") + std::to_string(a.shape(i));
  return s + "]";
}

// A [B, T, heads, dim] TensorView over the array's own memory, with its strides (in
// elements). The dim axis must have stride 1; strides of axes of size 1 are irrelevant
// and replaced by the natural ones (frameworks report arbitrary values there).
// Everything else (negative or overlapping strides, sizes) is checked by the library.
template <class T, class A>
TensorView<T> view_of(const A& a, const std::string& name) {
  check_cpu(a, name);
  check_dtype<std::remove_const_t<T>>(a, name);
  if (a.ndim() != 4)
    throw Error(name + ": expected 4 dims [B, T, heads, dim], got " + std::to_string(a.ndim()) +
                " dims with shape " + shape_of(a));
  TensorView<T> v;
  v.data = static_cast<T*>(const_cast<void*>(static_cast<const void*>(a.data())));
  for (int i = 0; i < 4; ++i) v.shape[i] = static_cast<index_t>(a.shape(i));
  if (a.size() == 0)  // empty arrays may have no data pointer at all
    throw Error(name + ": every size must be positive, got shape " + shape_of(a));
  if (v.shape[3] != 1 && a.stride(3) != 1)
    throw Error(name + ": the last (dim) axis must be contiguous (stride 1), got stride " +
                std::to_string(a.stride(3)) + " for shape " + shape_of(a) +
                "; make it contiguous first (e.g. .contiguous())");
  index_t inner = v.shape[3];  // elements spanned by one step of the next-outer axis
  for (int i = 2; i >= 0; --i) {
    v.stride[i] = v.shape[i] == 1 ? inner : static_cast<index_t>(a.stride(i));
    inner = v.shape[i] * v.stride[i];
  }
  return v;
}

// Byte range [first, last) that a view may touch, for overlap checks.
struct Span {
  std::uintptr_t first = 0, last = 0;
  bool overlaps(const Span& o) const { return first < o.last && o.first < last; }
  bool operator==(const Span& o) const = default;
};

// Views the library rejects anyway (empty, negative strides) get an empty range, so that
// its message, not an overlap complaint, is what the caller sees.
template <class T>
Span span_of(const TensorView<T>& v) {
  const auto first = reinterpret_cast<std::uintptr_t>(v.data);
  index_t extent = 1;
  for (int i = 0; i < 4; ++i)
    if (v.shape[i] <= 0 || (i < 3 && v.stride[i] < 0)) return {first, first};
  for (int i = 0; i < 3; ++i) extent += (v.shape[i] - 1) * v.stride[i];
  extent += v.shape[3] - 1;
  return {first, first + static_cast<std::uintptr_t>(extent) * sizeof(T)};
}

// A C-contiguous array of the given shape (a phi parameter, cu_seqlens).
template <class T, class A>
T* contiguous_data(const A& a, const std::string& name, const std::vector<index_t>& shape) {
  check_cpu(a, name);
  check_dtype<std::remove_const_t<T>>(a, name);
  std::string want = "[";
  for (size_t i = 0; i < shape.size(); ++i) want += (i ? "," : "") + std::to_string(shape[i]);
  want += "]";
  bool same = a.ndim() == shape.size();
  for (size_t i = 0; same && i < shape.size(); ++i) same = static_cast<index_t>(a.shape(i)) == shape[i];
  if (!same) throw Error(name + ": expected shape " + want + ", got " + shape_of(a));
  index_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && a.stride(i) != expect)
      throw Error(name + ": must be contiguous (row-major); make it contiguous first");
    expect *= shape[i];
  }
  return static_cast<T*>(const_cast<void*>(static_cast<const void*>(a.data())));
}

template <class A>
A array_arg(nb::handle h, const std::string& name) {
  A a;
  if (!nb::try_cast<A>(h, a, /*convert=*/false))
    throw nb::type_error((name + ": expected a torch tensor or numpy array, got " +
                          nb::cast<std::string>(nb::str(h.type().attr("__name__"))))
                             .c_str());
  return a;
}

// The fields phi=kind uses and their shapes (nsa/phi_fields.h), in the table's order.
std::vector<std::pair<PhiField, std::vector<index_t>>> used_phi_fields(PhiKind kind, index_t l, index_t dim,
                                                                       index_t hidden) {
  std::vector<std::pair<PhiField, std::vector<index_t>>> out;
  for (PhiField f : kPhiFields)
    if (phi_field_used(kind, f)) out.emplace_back(f, phi_field_shape(f, l, dim, hidden));
  return out;
}

std::vector<std::pair<PhiField, std::vector<index_t>>> used_phi_fields(const Config& c, index_t dim) {
  return used_phi_fields(c.phi(), c.block_len(), dim, c.phi_hidden_for(dim));
}

// A dict {name: array} (or None for phi=mean) -> PhiWeights<T> or PhiGradients<T>.
template <class T, class A, class P>
P phi_arrays(const Config& c, nb::handle params, index_t dim, const std::string& name) {
  P out;
  const auto fields = used_phi_fields(c, dim);
  if (params.is_none()) {
    if (!fields.empty())
      throw Error(name + " is None but phi=" + phi_kind_name(c.phi()) + " has parameters");
    return out;
  }
  if (!nb::isinstance<nb::dict>(params))
    throw nb::type_error((name + ": expected a dict of arrays or None").c_str());
  nb::dict d = nb::borrow<nb::dict>(params);
  for (auto [key, value] : d) {
    const std::string k = nb::cast<std::string>(nb::str(key));
    bool known = false;
    for (const auto& f : fields) known |= k == phi_field_name(f.first);
    if (!known) {
      std::string expected;
      for (const auto& f : fields) expected += std::string(expected.empty() ? "" : ", ") + phi_field_name(f.first);
      throw Error(name + ": unexpected parameter '" + k + "' for phi=" + phi_kind_name(c.phi()) +
                  " (expected " + (expected.empty() ? "none" : expected) + ")");
    }
  }
  for (const auto& [f, shape] : fields) {
    const char* field = phi_field_name(f);
    const std::string full = name + "." + field;
    if (!d.contains(field))
      throw Error(full + " is missing (phi=" + std::string(phi_kind_name(c.phi())) + ")");
    A a = array_arg<A>(d[field], full);
    phi_field(out, f) = contiguous_data<T>(a, full, shape);
  }
  return out;
}

// cu_seqlens: None or an int64 [num_seqs + 1] array. The library checks its values.
Sequences sequences_of(nb::handle cu_seqlens) {
  Sequences s;
  if (cu_seqlens.is_none()) return s;
  Array a = array_arg<Array>(cu_seqlens, "cu_seqlens");
  if (a.ndim() != 1) throw Error("cu_seqlens: expected 1 dim [num_seqs + 1], got " + shape_of(a));
  const index_t n = static_cast<index_t>(a.shape(0));
  s.cu_seqlens = contiguous_data<const std::int64_t>(a, "cu_seqlens", {n});
  s.num_seqs = n - 1;
  return s;
}

// ---- saved state of a forward call ---------------------------------------------------
struct Saved {
  Config config;
  std::variant<NsaSaved<float>, NsaSaved<double>> state;
  bool bf16_inputs = false;  // the forward read bfloat16 inputs (its state is fp32)

  const char* dtype() const { return state.index() == 1 ? "float64" : bf16_inputs ? "bfloat16" : "float32"; }
};

// The saved selected blocks, copied: int32 [rows, kv_heads, top_n], ascending, -1 padded.
nb::ndarray<nb::numpy, std::int32_t> saved_selection(const Saved& s) {
  return std::visit(
      [](const auto& st) {
        auto* copy = new std::vector<std::int32_t>(st.sel_blocks);
        nb::capsule owner(copy, [](void* p) noexcept { delete static_cast<std::vector<std::int32_t>*>(p); });
        return nb::ndarray<nb::numpy, std::int32_t>(
            copy->data(), {static_cast<size_t>(st.rows), static_cast<size_t>(st.kv_heads),
                           static_cast<size_t>(st.top_n)},
            owner);
      },
      s.state);
}

// ---- forward / backward --------------------------------------------------------------
struct Args {
  Array q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates;
  nb::handle phi_k, phi_v, cu_seqlens;
};

template <class T>
NsaInputs<T> inputs_of(const Config& c, const Args& a) {
  NsaInputs<T> in;
  in.q = view_of<const T>(a.q, "q");
  in.k_cmp = view_of<const T>(a.k_cmp, "k_cmp");
  in.v_cmp = view_of<const T>(a.v_cmp, "v_cmp");
  in.k_slc = view_of<const T>(a.k_slc, "k_slc");
  in.v_slc = view_of<const T>(a.v_slc, "v_slc");
  in.k_win = view_of<const T>(a.k_win, "k_win");
  in.v_win = view_of<const T>(a.v_win, "v_win");
  in.gates = view_of<const T>(a.gates, "gates");
  in.phi_k = phi_arrays<const T, Array, PhiWeights<T>>(c, a.phi_k, in.k_cmp.dim(), "phi_k");
  in.phi_v = phi_arrays<const T, Array, PhiWeights<T>>(c, a.phi_v, in.v_cmp.dim(), "phi_v");
  in.seqs = sequences_of(a.cu_seqlens);
  return in;
}

template <class T>
std::vector<std::pair<const char*, Span>> input_spans(const NsaInputs<T>& in) {
  return {{"q", span_of(in.q)},         {"k_cmp", span_of(in.k_cmp)}, {"v_cmp", span_of(in.v_cmp)},
          {"k_slc", span_of(in.k_slc)}, {"v_slc", span_of(in.v_slc)}, {"k_win", span_of(in.k_win)},
          {"v_win", span_of(in.v_win)}, {"gates", span_of(in.gates)}};
}

// The element type of outputs and gradients for inputs of type T: bf16 inputs give fp32.
template <class T>
using Out = std::conditional_t<std::is_same_v<T, bf16>, float, T>;

template <class T>
void forward_t(const Config& c, const Args& a, MutArray out_array, Saved* saved) {
  const NsaInputs<T> in = inputs_of<T>(c, a);
  const TensorView<Out<T>> out = view_of<Out<T>>(out_array, "out");
  const Span out_span = span_of(out);
  for (const auto& [name, span] : input_spans(in))
    if (out_span.overlaps(span))
      throw Error(std::string("out overlaps the memory of ") + name + "; pass a separate output buffer");
  nb::gil_scoped_release release;
  if constexpr (std::is_same_v<Out<T>, float>) {  // fp32 and bf16: the CPU kernels
    NsaSaved<float>* st = saved ? &saved->state.template emplace<0>() : nullptr;
    if (saved) saved->bf16_inputs = std::is_same_v<T, bf16>;
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    nsa::nsa_forward(c, in, out, st, pool_locked());
  } else {
    NsaSaved<double>* st = saved ? &saved->state.template emplace<1>() : nullptr;
    reference::nsa_forward(c, in, out, st);
  }
}

nb::object forward(const Config& c, const Args& a, MutArray out, bool save) {
  check_cpu(a.q, "q");
  std::unique_ptr<Saved> saved = save ? std::make_unique<Saved>(Saved{c, {}}) : nullptr;
  if (a.q.dtype() == nb::dtype<float>())
    forward_t<float>(c, a, out, saved.get());
  else if (a.q.dtype() == nb::dtype<double>())
    forward_t<double>(c, a, out, saved.get());
  else if (a.q.dtype() == dtype_of<bf16>())
    forward_t<bf16>(c, a, out, saved.get());
  else
    throw nb::type_error(("q has dtype " + dtype_name(a.q.dtype()) +
                          "; nsa runs float32 (fast CPU kernels), bfloat16 (bf16 storage, fp32 compute) "
                          "or float64 (the reference)")
                             .c_str());
  if (!saved) return nb::none();
  return nb::cast(saved.release(), nb::rv_policy::take_ownership);
}

struct GradArgs {
  MutArray dq, dk_cmp, dv_cmp, dk_slc, dv_slc, dk_win, dv_win, dgates;
  nb::handle dphi_k, dphi_v;
};

template <class T>
void backward_t(const Saved& s, const Args& a, Array d_out_array, const GradArgs& g) {
  using G = Out<T>;  // d_out and gradients: fp32 for bf16 inputs
  const Config& c = s.config;
  const NsaInputs<T> in = inputs_of<T>(c, a);
  const TensorView<const G> d_out = view_of<const G>(d_out_array, "d_out");
  NsaGradients<G> grads;
  grads.dq = view_of<G>(g.dq, "dq");
  grads.dk_cmp = view_of<G>(g.dk_cmp, "dk_cmp");
  grads.dv_cmp = view_of<G>(g.dv_cmp, "dv_cmp");
  grads.dk_slc = view_of<G>(g.dk_slc, "dk_slc");
  grads.dv_slc = view_of<G>(g.dv_slc, "dv_slc");
  grads.dk_win = view_of<G>(g.dk_win, "dk_win");
  grads.dv_win = view_of<G>(g.dv_win, "dv_win");
  grads.dgates = view_of<G>(g.dgates, "dgates");
  grads.phi_k = phi_arrays<G, MutArray, PhiGradients<G>>(c, g.dphi_k, in.k_cmp.dim(), "dphi_k");
  grads.phi_v = phi_arrays<G, MutArray, PhiGradients<G>>(c, g.dphi_v, in.v_cmp.dim(), "dphi_v");

  // Gradient buffers may alias one another exactly (shared K/V: the sum is written) but
  // must not overlap the inputs, d_out, or each other partially.
  auto spans = input_spans(in);
  spans.push_back({"d_out", span_of(d_out)});
  const std::pair<const char*, Span> grad_spans[] = {
      {"dq", span_of(grads.dq)},         {"dk_cmp", span_of(grads.dk_cmp)},
      {"dv_cmp", span_of(grads.dv_cmp)}, {"dk_slc", span_of(grads.dk_slc)},
      {"dv_slc", span_of(grads.dv_slc)}, {"dk_win", span_of(grads.dk_win)},
      {"dv_win", span_of(grads.dv_win)}, {"dgates", span_of(grads.dgates)}};
  const TensorView<G> grad_views[] = {grads.dq,     grads.dk_cmp, grads.dv_cmp, grads.dk_slc,
                                      grads.dv_slc, grads.dk_win, grads.dv_win, grads.dgates};
  for (size_t i = 0; i < std::size(grad_spans); ++i) {
    for (const auto& [name, span] : spans)
      if (grad_spans[i].second.overlaps(span))
        throw Error(std::string(grad_spans[i].first) + " overlaps the memory of " + name);
    for (size_t j = 0; j < i; ++j) {
      const bool same = grad_views[i].data == grad_views[j].data &&
                        grad_views[i].shape == grad_views[j].shape &&
                        grad_views[i].stride == grad_views[j].stride;
      if (!same && grad_spans[i].second.overlaps(grad_spans[j].second))
        throw Error(std::string(grad_spans[i].first) + " partially overlaps " + grad_spans[j].first +
                    " (gradient buffers are either the same view or disjoint)");
    }
  }

  nb::gil_scoped_release release;
  if constexpr (std::is_same_v<G, float>) {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    nsa::nsa_backward(c, in, std::get<0>(s.state), d_out, grads, pool_locked());
  } else {
    reference::nsa_backward(c, in, std::get<1>(s.state), d_out, grads);
  }
}

void backward(const Saved& s, const Args& a, Array d_out, const GradArgs& g) {
  if (std::string(s.dtype()) == "float32") {
    check_dtype<float>(a.q, "q");
    backward_t<float>(s, a, d_out, g);
  } else if (s.bf16_inputs) {
    check_dtype<bf16>(a.q, "q");
    backward_t<bf16>(s, a, d_out, g);
  } else {
    check_dtype<double>(a.q, "q");
    backward_t<double>(s, a, d_out, g);
  }
}

// ---- decode cache ------------------------------------------------------------------
// Tokens for prefill / append (one sequence: B = 1, T tokens) or step (B sequences, T = 1).
// k_slc ... v_win may be None: left empty, which the cache reads as shared K/V.
struct TokenArgs {
  nb::handle q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates;
};

DecodeTokens tokens_of(const TokenArgs& a) {
  auto view = [](nb::handle h, const char* name) {
    return h.is_none() ? TensorView<const float>{} : view_of<const float>(array_arg<Array>(h, name), name);
  };
  DecodeTokens x;
  x.q = view(a.q, "q");
  x.k_cmp = view(a.k_cmp, "k_cmp");
  x.v_cmp = view(a.v_cmp, "v_cmp");
  x.k_slc = view(a.k_slc, "k_slc");
  x.v_slc = view(a.v_slc, "v_slc");
  x.k_win = view(a.k_win, "k_win");
  x.v_win = view(a.v_win, "v_win");
  x.gates = view(a.gates, "gates");
  if (x.k_cmp.empty() || x.v_cmp.empty()) throw Error("k_cmp and v_cmp are required");
  return x;
}

// A DecodeCache member function called under g_pool_mutex: prefill/step/append run with the
// GIL released and that mutex held, so every other access to a cache takes it too.
// (The mutex is never held while waiting for the GIL: no lock-order cycle.)
template <class R, class C, class... A>
auto locked(R (C::*f)(A...) const) {
  return [f](const C& c, A... a) -> R {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    return (c.*f)(a...);
  };
}
template <class R, class C, class... A>
auto locked(R (C::*f)(A...)) {
  return [f](C& c, A... a) -> R {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    return (c.*f)(a...);
  };
}

// The Python names of nsa::CacheStorage: "fp32", "bf16".
CacheStorage parse_storage(const std::string& name) {
  if (name == "fp32") return CacheStorage::fp32;
  if (name == "bf16") return CacheStorage::bf16;
  throw Error("DecodeCache: storage must be 'fp32' or 'bf16', got '" + name + "'");
}
const char* storage_name(CacheStorage s) { return s == CacheStorage::bf16 ? "bf16" : "fp32"; }

DecodeCache make_cache(const Config& c, index_t heads, index_t kv_heads, index_t d_k, index_t d_v,
                       bool shared_kv, index_t max_seqs, index_t max_tokens, index_t chunk_tokens,
                       nb::handle phi_k, nb::handle phi_v, const std::string& storage, index_t max_pages) {
  DecodeShape shape;
  shape.heads = heads, shape.kv_heads = kv_heads, shape.d_k = d_k, shape.d_v = d_v;
  shape.shared_kv = shared_kv, shape.max_seqs = max_seqs, shape.max_tokens = max_tokens;
  shape.chunk_tokens = chunk_tokens, shape.storage = parse_storage(storage), shape.max_pages = max_pages;
  if (d_k <= 0 || d_v <= 0)  // phi's sizes below depend on them
    throw Error("DecodeShape: d_k and d_v must be positive, got d_k=" + std::to_string(d_k) +
                " d_v=" + std::to_string(d_v));
  const auto wk = phi_arrays<const float, Array, PhiWeights<float>>(c, phi_k, d_k, "phi_k");
  const auto wv = phi_arrays<const float, Array, PhiWeights<float>>(c, phi_v, d_v, "phi_v");
  return DecodeCache(c, shape, wk, wv);  // copies the weights
}

}  // namespace nsa::python

NB_MODULE(_core, m) {
  using namespace nsa;
  using namespace nsa::python;
  m.doc() = "nsa._core: the C++ library behind the nsa package (use the nsa module instead)";
  m.attr("__version__") = kVersion;
  nb::exception<Error>(m, "Error", PyExc_ValueError);
  // Saved states live in autograd graphs and Configs in a cache until interpreter exit;
  // nanobind would report those as leaks at shutdown.
  nb::set_leak_warnings(false);

  nb::class_<Config>(m, "Config", "Validated NSA parameters (nsa::Config)")
      .def(
          "__init__",
          [](Config* self, int block_len, int stride, int sel_block, int top_n, int n_init,
             int n_local, int window, double scale, const std::string& phi, int phi_hidden) {
            ConfigOptions o;
            o.block_len = block_len, o.stride = stride, o.sel_block = sel_block, o.top_n = top_n;
            o.n_init = n_init, o.n_local = n_local, o.window = window, o.scale = scale;
            o.phi = parse_phi_kind(phi);
            o.phi_hidden = phi_hidden;
            new (self) Config(o);
          },
          nb::kw_only(), "block_len"_a = 32, "stride"_a = 16, "sel_block"_a = 64, "top_n"_a = 16,
          "n_init"_a = 1, "n_local"_a = 2, "window"_a = 512, "scale"_a = 0.0, "phi"_a = "mlp",
          "phi_hidden"_a = 0)
      .def_prop_ro("block_len", &Config::block_len)
      .def_prop_ro("stride", &Config::stride)
      .def_prop_ro("sel_block", &Config::sel_block)
      .def_prop_ro("top_n", &Config::top_n)
      .def_prop_ro("n_init", &Config::n_init)
      .def_prop_ro("n_local", &Config::n_local)
      .def_prop_ro("window", &Config::window)
      .def_prop_ro("scale", [](const Config& c) { return c.options().scale; })
      .def_prop_ro("phi", [](const Config& c) { return std::string(phi_kind_name(c.phi())); })
      .def_prop_ro("phi_hidden", [](const Config& c) { return c.options().phi_hidden; })
      .def("num_cmp_blocks", &Config::num_cmp_blocks, "seq_len"_a)
      .def("describe", &Config::describe)
      .def("__repr__", [](const Config& c) { return "nsa.Config(" + c.describe() + ")"; });

  nb::class_<Saved>(m, "Saved", "What a forward call keeps for its backward call")
      .def_prop_ro("dtype", &Saved::dtype)
      .def_prop_ro("config", [](const Saved& s) { return s.config; })
      .def("sel_blocks", &saved_selection,
           "Chosen selection blocks, int32 [rows, kv_heads, top_n], ascending, -1 padded");

  m.def(
      "forward",
      [](const Config& c, Array q, Array k_cmp, Array v_cmp, Array k_slc, Array v_slc,
         Array k_win, Array v_win, Array gates, nb::handle phi_k, nb::handle phi_v,
         nb::handle cu_seqlens, MutArray out, bool save) {
        return forward(c, {q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates, phi_k, phi_v, cu_seqlens},
                       out, save);
      },
      "config"_a, "q"_a.noconvert(), "k_cmp"_a.noconvert(), "v_cmp"_a.noconvert(),
      "k_slc"_a.noconvert(), "v_slc"_a.noconvert(), "k_win"_a.noconvert(), "v_win"_a.noconvert(),
      "gates"_a.noconvert(), "phi_k"_a.none(), "phi_v"_a.none(), "cu_seqlens"_a.none(),
      "out"_a.noconvert(), "save"_a,
      "Writes the NSA output into `out` [B,T,H,d_v]; returns a Saved state when save=True.\n"
      "All arrays are read in place (DLPack, no copies).");

  m.def(
      "backward",
      [](const Saved& s, Array q, Array k_cmp, Array v_cmp, Array k_slc, Array v_slc,
         Array k_win, Array v_win, Array gates, nb::handle phi_k, nb::handle phi_v,
         nb::handle cu_seqlens, Array d_out, MutArray dq, MutArray dk_cmp, MutArray dv_cmp,
         MutArray dk_slc, MutArray dv_slc, MutArray dk_win, MutArray dv_win, MutArray dgates,
         nb::handle dphi_k, nb::handle dphi_v) {
        backward(s, {q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates, phi_k, phi_v, cu_seqlens},
                 d_out, {dq, dk_cmp, dv_cmp, dk_slc, dv_slc, dk_win, dv_win, dgates, dphi_k, dphi_v});
      },
      "saved"_a, "q"_a.noconvert(), "k_cmp"_a.noconvert(), "v_cmp"_a.noconvert(),
      "k_slc"_a.noconvert(), "v_slc"_a.noconvert(), "k_win"_a.noconvert(), "v_win"_a.noconvert(),
      "gates"_a.noconvert(), "phi_k"_a.none(), "phi_v"_a.none(), "cu_seqlens"_a.none(),
      "d_out"_a.noconvert(), "dq"_a.noconvert(), "dk_cmp"_a.noconvert(), "dv_cmp"_a.noconvert(),
      "dk_slc"_a.noconvert(), "dv_slc"_a.noconvert(), "dk_win"_a.noconvert(),
      "dv_win"_a.noconvert(), "dgates"_a.noconvert(), "dphi_k"_a.none(), "dphi_v"_a.none(),
      "Overwrites the gradient buffers with the gradients of sum(out * d_out). Gradient\n"
      "buffers passed more than once (shared K/V) receive the sum over their branches.");

  m.def(
      "view_of",
      [](Array a, const std::string& name) {
        auto describe = [](const auto& v) {
          return nb::make_tuple(reinterpret_cast<std::uintptr_t>(v.data),
                                nb::make_tuple(v.shape[0], v.shape[1], v.shape[2], v.shape[3]),
                                nb::make_tuple(v.stride[0], v.stride[1], v.stride[2]));
        };
        if (a.dtype() == nb::dtype<double>()) return describe(view_of<const double>(a, name));
        if (a.dtype() == dtype_of<bf16>()) return describe(view_of<const bf16>(a, name));
        return describe(view_of<const float>(a, name));
      },
      "array"_a.noconvert(), "name"_a = "array",
      "(data address, shape, strides in elements) of the TensorView the binding builds over an\n"
      "array: for checking that arrays are read in place.");

  nb::class_<DecodeCache>(m, "DecodeCache",
                          "nsa::DecodeCache: one layer's decode state (fp32 inputs and outputs; "
                          "K/V stored as fp32 or bf16)")
      .def(
          "__init__",
          [](DecodeCache* self, const Config& c, index_t heads, index_t kv_heads, index_t d_k,
             index_t d_v, bool shared_kv, index_t max_seqs, index_t max_tokens,
             index_t chunk_tokens, nb::handle phi_k, nb::handle phi_v, const std::string& storage,
             index_t max_pages) {
            new (self) DecodeCache(make_cache(c, heads, kv_heads, d_k, d_v, shared_kv, max_seqs,
                                              max_tokens, chunk_tokens, phi_k, phi_v, storage, max_pages));
          },
          "config"_a, "heads"_a, "kv_heads"_a, "d_k"_a, "d_v"_a, "shared_kv"_a, "max_seqs"_a,
          "max_tokens"_a, "chunk_tokens"_a, "phi_k"_a.none(), "phi_v"_a.none(), "storage"_a = "fp32",
          "max_pages"_a = 0)
      .def_prop_ro("config", [](const DecodeCache& c) { return c.config(); })
      .def_prop_ro("shape", [](const DecodeCache& c) {
        const DecodeShape& s = c.shape();
        nb::dict d;
        d["heads"] = s.heads, d["kv_heads"] = s.kv_heads, d["d_k"] = s.d_k, d["d_v"] = s.d_v;
        d["shared_kv"] = s.shared_kv, d["max_seqs"] = s.max_seqs, d["max_tokens"] = s.max_tokens;
        d["chunk_tokens"] = s.chunk_tokens, d["storage"] = storage_name(s.storage);
        return d;
      })
      .def(
          "prefill",
          [](DecodeCache& c, index_t seq, nb::handle q, nb::handle k_cmp, nb::handle v_cmp,
             nb::handle k_slc, nb::handle v_slc, nb::handle k_win, nb::handle v_win,
             nb::handle gates, MutArray out) {
            const DecodeTokens x = tokens_of({q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates});
            const TensorView<float> o = view_of<float>(out, "out");
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(g_pool_mutex);
            c.prefill(seq, x, o, pool_locked());
          },
          "seq"_a, "q"_a.none(), "k_cmp"_a, "v_cmp"_a, "k_slc"_a.none(), "v_slc"_a.none(),
          "k_win"_a.none(), "v_win"_a.none(), "gates"_a.none(), "out"_a.noconvert())
      .def(
          "append",
          [](DecodeCache& c, index_t seq, nb::handle k_cmp, nb::handle v_cmp, nb::handle k_slc,
             nb::handle v_slc, nb::handle k_win, nb::handle v_win) {
            const nb::handle none = nb::none();
            const DecodeTokens x = tokens_of({none, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, none});
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(g_pool_mutex);
            c.append(seq, x, pool_locked());
          },
          "seq"_a, "k_cmp"_a, "v_cmp"_a, "k_slc"_a.none(), "v_slc"_a.none(), "k_win"_a.none(),
          "v_win"_a.none())
      .def(
          "step",
          [](DecodeCache& c, const std::vector<index_t>& seqs, nb::handle q, nb::handle k_cmp,
             nb::handle v_cmp, nb::handle k_slc, nb::handle v_slc, nb::handle k_win,
             nb::handle v_win, nb::handle gates, MutArray out) {
            const DecodeTokens x = tokens_of({q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates});
            const TensorView<float> o = view_of<float>(out, "out");
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(g_pool_mutex);
            c.step(seqs.data(), static_cast<index_t>(seqs.size()), x, o, pool_locked());
          },
          "seqs"_a, "q"_a, "k_cmp"_a, "v_cmp"_a, "k_slc"_a.none(), "v_slc"_a.none(),
          "k_win"_a.none(), "v_win"_a.none(), "gates"_a, "out"_a.noconvert())
      .def("reset", locked(&DecodeCache::reset), "seq"_a)
      .def("fork", locked(&DecodeCache::fork), "src"_a, "dst"_a)
      .def("truncate", locked(&DecodeCache::truncate), "seq"_a, "tokens"_a)
      .def("position", locked(&DecodeCache::position), "seq"_a)
      .def("num_cmp_blocks", locked(&DecodeCache::num_cmp_blocks), "seq"_a)
      .def("tokens_read", [](const DecodeCache& c, index_t seq, index_t kv_head) {
        const TokensRead r = locked(&DecodeCache::tokens_read)(c, seq, kv_head);
        nb::dict d;
        d["cmp"] = r.cmp, d["slc"] = r.slc, d["win"] = r.win, d["total"] = r.total();
        return d;
      }, "seq"_a, "kv_head"_a)
      .def("selected_blocks", locked(&DecodeCache::selected_blocks), "seq"_a, "kv_head"_a)
      .def("total_tokens_read", locked(&DecodeCache::total_tokens_read))
      .def("memory", [](const DecodeCache& c) {
        const DecodeMemory mem = locked(&DecodeCache::memory)(c);
        nb::dict d;
        d["bytes"] = mem.bytes, d["chunk_bytes"] = mem.chunk_bytes, d["chunk_tokens"] = mem.chunk_tokens;
        d["chunks"] = mem.chunks, d["tokens"] = mem.tokens, d["bytes_per_token"] = mem.bytes_per_token();
        d["shared_chunks"] = mem.shared_chunks, d["max_chunks"] = mem.max_chunks;
        return d;
      })
      .def("save", [](const DecodeCache& c, const std::string& path) {
        nb::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        c.save(path);
      }, "path"_a)
      .def("load", [](DecodeCache& c, const std::string& path) {
        nb::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        c.load(path);
      }, "path"_a)
      .def("save_sequence", [](const DecodeCache& c, index_t seq, const std::string& path) {
        nb::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        c.save_sequence(seq, path);
      }, "seq"_a, "path"_a)
      .def("load_sequence", [](DecodeCache& c, index_t seq, const std::string& path) {
        nb::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        c.load_sequence(seq, path);
      }, "seq"_a, "path"_a);

  m.def("set_num_threads", &set_num_threads, "threads"_a,
        "Threads of the fp32 CPU kernels (0: all cores).");
  m.def("get_num_threads", &get_num_threads);
  m.def(
      "phi_fields",
      [](const std::string& phi, index_t block_len, index_t dim, index_t hidden) {
        std::vector<std::pair<std::string, std::vector<index_t>>> out;
        for (const auto& [f, shape] : used_phi_fields(parse_phi_kind(phi), block_len, dim, hidden))
          out.emplace_back(phi_field_name(f), shape);
        return out;
      },
      "phi"_a, "block_len"_a, "dim"_a, "hidden"_a,
      "The parameters phi=`phi` takes, in the order the autograd op passes them: [(name, shape)] for block\n"
      "length `block_len`, head dim `dim` and mlp width `hidden` (nsa/phi_fields.h, the one table).");
}
