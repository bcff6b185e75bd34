// The device cache's state for one storage type (DecodeCache<T>::State) and the helpers
// of the decode launchers: validation, the per-step plan upload (pinned staging, one async
// copy), split sizes, and the launchers that fill the cache (append, phi of completed
// blocks: GEMVs for a step, the tiled GEMM of phi.cuh for prefill-sized appends).
// Included by decode.cuh.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/problem.h"
#include "cuda/common.cuh"
#include "cuda/decode_append.cuh"
#include "cuda/decode_attend.cuh"
#include "cuda/phi.cuh"
#include "nsa/cuda_decode.h"

namespace nsa::cuda::detail {

// Workspace slots of the decode step: per branch (cmp, slc, win) its partials m, l, acc.
enum DecodeSlot : int {
  kDecPartial = 0,  // + 3 * branch + {0: m, 1: l, 2: acc}
  kDecLogits = 9, kDecImp, kDecOcmp, kDecSel, kDecHidden, kDecPlan
};

inline std::string dstr(index_t x) { return std::to_string(x); }

inline void check_decode_dims(index_t dk, index_t dv) {
  for (auto [d, name] : {std::pair{dk, "d_k"}, std::pair{dv, "d_v"}})
    if (d % 16 != 0 || d < 16 || d > 256)
      throw Error(std::string("CUDA decode needs ") + name + " to be a multiple of 16 in [16, 256], got " + dstr(d));
}

inline int device_sms() {
  int dev = 0, sms = 0;
  NSA_CUDA_CHECK(cudaGetDevice(&dev));
  NSA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return std::max(sms, 1);
}

// Keys per CTA (a multiple of the 64-key tile) and number of splits for a branch of at most
// `nkeys` keys when `groups` CTAs run per split: about 2 CTAs per SM in all.
struct SplitPlan {
  std::int64_t split_keys;
  int splits;
};
inline SplitPlan choose_splits(std::int64_t nkeys, std::int64_t groups, int sms) {
  nkeys = std::max<std::int64_t>(nkeys, 1);
  const std::int64_t want = std::max<std::int64_t>(1, (2 * std::int64_t(sms) + groups - 1) / groups);
  std::int64_t per = (nkeys + want - 1) / want;
  per = std::max<std::int64_t>(64, (per + 63) / 64 * 64);
  return {per, static_cast<int>((nkeys + per - 1) / per)};
}

// Heads per attend CTA (<= 16) and chunks per kv group: balanced, e.g. G = 20 -> 2 x 10.
inline void head_chunks(int G, int* gh, int* chunks) {
  *chunks = (G + DecodeAttendLayout::kMaxHeads - 1) / DecodeAttendLayout::kMaxHeads;
  *gh = (G + *chunks - 1) / *chunks;
}

template <class T>
void launch_attend(const DecodeAttendParams& ap, int grid_x, int items, cudaStream_t stream) {
  const DecodeAttendLayout lay(ap.gh, ap.dk, ap.dv, static_cast<int>(sizeof(T)));
  NSA_CUDA_CHECK(cudaFuncSetAttribute(decode_attend_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(lay.total)));
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(ap.H_kv * ap.head_chunks),
                  static_cast<unsigned>(items));
  decode_attend_kernel<T><<<grid, DecodeAttendLayout::kThreads, lay.total, stream>>>(ap);
  NSA_CUDA_CHECK_LAUNCH("decode_attend_kernel");
}

// Partial buffers of one branch in the workspace: [items, H, splits] m, l and acc x d_v.
inline void partial_buffers(Workspace& ws, int branch, std::int64_t items, std::int64_t H, int splits,
                            std::int64_t dv, DecodeBranch& br) {
  const std::size_t n = std::size_t(items) * H * splits;
  br.splits = splits;
  br.part_m = static_cast<float*>(ws.get(kDecPartial + 3 * branch, n * sizeof(float)));
  br.part_l = static_cast<float*>(ws.get(kDecPartial + 3 * branch + 1, n * sizeof(float)));
  br.part_acc = static_cast<float*>(ws.get(kDecPartial + 3 * branch + 2, n * dv * sizeof(float)));
}

template <class V>
bool same_view(const V& a, const V& b) {
  return a.data == b.data && a.shape == b.shape && a.stride == b.stride;
}

}  // namespace nsa::cuda::detail

namespace nsa::cuda {

template <class Tag>
struct DecodeCache<Tag>::State {
  using T = typename detail::DeviceType<Tag>::type;

  Config config;
  DecodeCacheShape shape;
  index_t group = 0, max_cmp = 0, max_candidates = 0;
  int streams = 0;  // stored raw K/V streams: 1 (shared) or 3 (cmp, slc, win)
  int sms = 1;
  float scale_log2 = 0.f;
  DeviceBuffer k[3], v[3], kc, vc;  // [max_seqs, max_tokens | max_cmp, H_kv, d]
  DeviceBuffer phi_buf[2][6];
  PhiWeights<Tag> phi[2];           // k, v: pointers into phi_buf
  std::vector<index_t> pos;         // host positions
  Workspace ws;                     // step scratch (DecodeSlot)
  Workspace fwd_ws;                 // prefill's nsa_forward
  NsaSavedDevice saved;             // prefill's Kc/Vc
  // Plan upload: pinned staging, reused once the previous upload has completed.
  void* pinned = nullptr;
  std::size_t pinned_bytes = 0;
  cudaEvent_t plan_done = nullptr;
  bool plan_pending = false;
  index_t last_count = 0;
  const std::int32_t* last_sel = nullptr;

  ~State() {
    if (plan_pending) cudaEventSynchronize(plan_done);
    if (pinned != nullptr) cudaFreeHost(pinned);
    if (plan_done != nullptr) cudaEventDestroy(plan_done);
  }

  std::int64_t raw_seq_stride(index_t dim) const { return shape.max_tokens * shape.kv_heads * dim; }
  std::int64_t cmp_seq_stride(index_t dim) const { return max_cmp * shape.kv_heads * dim; }

  void check_seq(index_t seq, const char* what) const {
    if (seq < 0 || seq >= shape.max_seqs)
      throw Error(std::string(what) + ": sequence id " + detail::dstr(seq) + " out of range [0, " +
                  detail::dstr(shape.max_seqs) + ")");
  }

  // Checks the views of B sequences of T tokens; queries: q and gates too.
  void check_tokens(const DecodeTokens<Tag>& x, index_t B, index_t T, bool queries, const char* what) const {
    using nsa::detail::check_shape;
    using nsa::detail::check_view;
    const std::string w(what);
    auto check = [&](const TensorView<const Tag>& v, const char* name, index_t heads, index_t dim) {
      const std::string n = w + ": " + name;
      check_view(v, n.c_str());
      check_shape(v, n.c_str(), B, T, heads, dim);
    };
    check(x.k_cmp, "k_cmp", shape.kv_heads, shape.d_k);
    check(x.v_cmp, "v_cmp", shape.kv_heads, shape.d_v);
    const struct { const TensorView<const Tag>& v; const TensorView<const Tag>& same; const char* name; index_t dim; } other[] = {
        {x.k_slc, x.k_cmp, "k_slc", shape.d_k}, {x.v_slc, x.v_cmp, "v_slc", shape.d_v},
        {x.k_win, x.k_cmp, "k_win", shape.d_k}, {x.v_win, x.v_cmp, "v_win", shape.d_v}};
    for (const auto& o : other) {
      if (shape.shared_kv) {
        if (!o.v.empty() && !detail::same_view(o.v, o.same))
          throw Error(w + ": " + o.name + " must be empty or equal to the cmp view when K/V are shared");
      } else {
        check(o.v, o.name, shape.kv_heads, o.dim);
      }
    }
    if (queries) {
      check(x.q, "q", shape.heads, shape.d_k);
      check(x.gates, "gates", shape.heads, 3);
    }
  }

  const TensorView<const Tag>& key_view(const DecodeTokens<Tag>& x, int b) const {
    return b == 0 ? x.k_cmp : b == 1 ? x.k_slc : x.k_win;
  }
  const TensorView<const Tag>& value_view(const DecodeTokens<Tag>& x, int b) const {
    return b == 0 ? x.v_cmp : b == 1 ? x.v_slc : x.v_win;
  }

  // Uploads the plan (items, phi rows, seq infos) in one copy; returns device pointers.
  void upload_plan(const std::vector<detail::DecodeItem>& items, const std::vector<detail::PhiRow>& rows,
                   const std::vector<detail::SeqInfo>& infos, cudaStream_t stream, detail::DecodeItem** d_items,
                   detail::PhiRow** d_rows, detail::SeqInfo** d_infos) {
    auto up16 = [](std::size_t x) { return (x + 15) / 16 * 16; };
    const std::size_t o_items = 0, o_rows = up16(items.size() * sizeof(detail::DecodeItem)),
                      o_infos = o_rows + up16(rows.size() * sizeof(detail::PhiRow)),
                      bytes = std::max<std::size_t>(16, o_infos + infos.size() * sizeof(detail::SeqInfo));
    if (plan_pending) {
      NSA_CUDA_CHECK(cudaEventSynchronize(plan_done));
      plan_pending = false;
    }
    if (bytes > pinned_bytes) {
      if (pinned != nullptr) NSA_CUDA_CHECK(cudaFreeHost(pinned));
      pinned = nullptr;
      pinned_bytes = 0;
      NSA_CUDA_CHECK(cudaHostAlloc(&pinned, bytes * 2, cudaHostAllocDefault));
      pinned_bytes = bytes * 2;
    }
    auto* base = static_cast<unsigned char*>(pinned);
    if (!items.empty()) std::memcpy(base + o_items, items.data(), items.size() * sizeof(detail::DecodeItem));
    if (!rows.empty()) std::memcpy(base + o_rows, rows.data(), rows.size() * sizeof(detail::PhiRow));
    if (!infos.empty()) std::memcpy(base + o_infos, infos.data(), infos.size() * sizeof(detail::SeqInfo));
    auto* dev = static_cast<unsigned char*>(ws.get(detail::kDecPlan, bytes));
    NSA_CUDA_CHECK(cudaMemcpyAsync(dev, pinned, bytes, cudaMemcpyHostToDevice, stream));
    NSA_CUDA_CHECK(cudaEventRecord(plan_done, stream));
    plan_pending = true;
    *d_items = reinterpret_cast<detail::DecodeItem*>(dev + o_items);
    if (d_rows != nullptr) *d_rows = reinterpret_cast<detail::PhiRow*>(dev + o_rows);
    if (d_infos != nullptr) *d_infos = reinterpret_cast<detail::SeqInfo*>(dev + o_infos);
  }

  // Copies `tokens` token rows of every item (view batch index = item) into the cache at
  // the items' positions it.t.
  void launch_append(const DecodeTokens<Tag>& x, const detail::DecodeItem* d_items, index_t items,
                     index_t tokens, cudaStream_t stream) {
    detail::DecodeAppendParams ap{};
    int n = 0;
    for (int b = 0; b < streams; ++b)
      for (int kind = 0; kind < 2; ++kind) {
        const TensorView<const Tag>& view = kind == 0 ? key_view(x, b) : value_view(x, b);
        const index_t dim = kind == 0 ? shape.d_k : shape.d_v;
        detail::AppendStream& s = ap.s[n++];
        s.src = view.data;
        s.sb = view.stride[0];
        s.st = view.stride[1];
        s.sh = view.stride[2];
        s.dst = (kind == 0 ? k[b] : v[b]).data();
        s.dst_ss = raw_seq_stride(dim);
        s.dst_st = shape.kv_heads * dim;
        s.dim = static_cast<int>(dim);
      }
    ap.items = d_items;
    ap.H_kv = static_cast<int>(shape.kv_heads);
    const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(items), static_cast<unsigned>(n));
    detail::decode_append_kernel<T><<<grid, 128, 0, stream>>>(ap);
    NSA_CUDA_CHECK_LAUNCH("decode_append_kernel");
  }

  // phi of `M` rows (completed blocks of single steps), GEMV kernels.
  void launch_phi_rows(const detail::PhiRow* d_rows, int M, cudaStream_t stream) {
    using namespace detail;
    const index_t l = config.block_len();
    for (int kind = 0; kind < 2; ++kind) {
      const index_t dim = kind == 0 ? shape.d_k : shape.d_v;
      const PhiWeights<Tag>& w = phi[kind];
      PhiRowsParams pr{};
      pr.rows = d_rows;
      pr.M = M;
      pr.x = (kind == 0 ? k[0] : v[0]).data();
      pr.x_ss = raw_seq_stride(dim);
      pr.x_st = shape.kv_heads * dim;
      pr.dim = static_cast<int>(dim);
      pr.stride = config.stride();
      pr.c = (kind == 0 ? kc : vc).data();
      pr.c_ss = cmp_seq_stride(dim);
      pr.c_st = shape.kv_heads * dim;
      auto gemv = [&](const PhiRowsParams& p) {
        const int groups = (p.M + kPhiRowsPerCta - 1) / kPhiRowsPerCta;  // grid.y <= 65535: CTAs loop
        const dim3 grid(static_cast<unsigned>(p.N), static_cast<unsigned>(std::min(groups, 65535)));
        phi_rows_kernel<T><<<grid, 256, 0, stream>>>(p);
        NSA_CUDA_CHECK_LAUNCH("phi_rows_kernel");
      };
      switch (config.phi()) {
        case PhiKind::mean:
          phi_rows_mean_kernel<T><<<static_cast<unsigned>(M), 128, 0, stream>>>(pr, static_cast<int>(l));
          NSA_CUDA_CHECK_LAUNCH("phi_rows_mean_kernel");
          break;
        case PhiKind::linear:
          pr.pe = w.pe;
          pr.w = w.w;
          pr.K = l * dim;
          pr.N = static_cast<int>(dim);
          gemv(pr);
          break;
        case PhiKind::mlp: {
          const index_t hidden = config.phi_hidden_for(dim);
          float* h = static_cast<float*>(ws.get(kDecHidden, std::size_t(M) * hidden * sizeof(float)));
          PhiRowsParams p1 = pr;
          p1.pe = w.pe;
          p1.w = w.w1;
          p1.bias = w.b1;
          p1.K = l * dim;
          p1.N = static_cast<int>(hidden);
          p1.gelu = true;
          p1.c_f32 = h;
          gemv(p1);
          PhiRowsParams p2 = pr;
          p2.x = nullptr;
          p2.a = h;
          p2.w = w.w2;
          p2.bias = w.b2;
          p2.K = hidden;
          p2.N = static_cast<int>(dim);
          gemv(p2);
          break;
        }
      }
    }
  }

  // phi of blocks [i0, i1) of sequence `seq` (prefill-sized), the tiled GEMM of phi.cuh.
  void launch_phi_blocks(index_t seq, index_t i0, index_t i1, const detail::SeqInfo* d_info, cudaStream_t stream) {
    using namespace detail;
    if (i1 <= i0) return;
    const index_t M = (i1 - i0) * shape.kv_heads;
    for (int kind = 0; kind < 2; ++kind) {
      const index_t dim = kind == 0 ? shape.d_k : shape.d_v;
      const PhiWeights<Tag>& w = phi[kind];
      GemmParams g{};
      g.x = (kind == 0 ? k[0] : v[0]).data();
      g.x_sb = raw_seq_stride(dim);
      g.x_st = shape.kv_heads * dim;
      g.x_sh = dim;
      g.seqs = d_info;  // {batch = seq, start = i0 * d, cmp0 = 0}
      g.num_seqs = 1;
      g.H_kv = static_cast<int>(shape.kv_heads);
      g.dim = static_cast<int>(dim);
      g.stride = config.stride();
      g.M = M;
      void* dst = static_cast<T*>((kind == 0 ? kc : vc).data()) + seq * cmp_seq_stride(dim) + i0 * shape.kv_heads * dim;
      launch_phi<T>(config, g, w, dim, dst, kDecHidden, ws, stream);
    }
  }
};

}  // namespace nsa::cuda
