// Host side of CUDA decoding (include/nsa/cuda_decode.h) for one storage type: the public
// methods of DecodeCache<T> (state and fill launchers in decode_state.cuh), the launch
// order of a step, and the dense decode step. Included once per storage type
// (decode_f32.cu, decode_bf16.cu, decode_f16.cu).
//
// One step for n sequences (one stream, no host synchronisation except the reuse of the
// pinned plan buffer, which waits for the previous step's plan upload):
//   0. plan (host): per item {seq, t, N_cmp(t + 1)}, the (seq, block, kv head) rows of
//      the compression blocks this step completes; one async upload from pinned memory
//   1. decode_append_kernel           K/V of the new tokens -> cache     (decode_append.cuh)
//   2. phi_rows_kernel (x2 for mlp)   Kc, Vc of the completed blocks     (decode_append.cuh)
//   3. decode_attend_kernel (cmp)     split partials + scores (logits)   (decode_attend.cuh)
//   4. decode_select_kernel           o_cmp, importance, top-n           (decode_select.cuh)
//   5. decode_attend_kernel (slc+win) split partials, one launch         (decode_attend.cuh)
//   6. decode_combine_kernel          merges, gated sum -> out           (decode_combine.cuh)
// Split sizes: keys per CTA a multiple of 64, chosen so that each branch launches about
// 2 CTAs per SM (long caches: fewer keys per CTA, more CTAs; short ones: one split).
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "cuda/decode_combine.cuh"
#include "cuda/decode_select.cuh"
#include "cuda/decode_state.cuh"
#include "nsa/cuda_decode.h"

namespace nsa::cuda {

template <class Tag>
DecodeCache<Tag>::DecodeCache(const Config& config, const DecodeCacheShape& shape, const PhiWeights<Tag>& phi_k,
                              const PhiWeights<Tag>& phi_v)
    : state_(std::make_unique<State>()) {
  using detail::dstr;
  State& st = *state_;
  st.config = config;
  st.shape = shape;
  const DecodeCacheShape& s = shape;
  if (s.heads <= 0 || s.kv_heads <= 0)
    throw Error("cuda::DecodeCache: heads and kv_heads must be positive, got H = " + dstr(s.heads) +
                ", H_kv = " + dstr(s.kv_heads));
  if (s.heads % s.kv_heads != 0)
    throw Error("cuda::DecodeCache: query heads H = " + dstr(s.heads) + " must be a multiple of H_kv = " + dstr(s.kv_heads));
  if (s.heads > 65535) throw Error("cuda::DecodeCache: at most 65535 query heads, got " + dstr(s.heads));
  detail::check_decode_dims(s.d_k, s.d_v);
  if (s.max_seqs <= 0) throw Error("cuda::DecodeCache: max_seqs must be positive, got " + dstr(s.max_seqs));
  if (s.max_tokens <= 0)
    throw Error("cuda::DecodeCache: max_tokens (the per-sequence capacity) must be positive, got " + dstr(s.max_tokens));
  nsa::detail::check_phi(config, phi_k, s.d_k, "phi_k", /*check_values=*/false);
  nsa::detail::check_phi(config, phi_v, s.d_v, "phi_v", /*check_values=*/false);
  st.group = s.heads / s.kv_heads;
  st.max_cmp = std::max<index_t>(1, config.num_cmp_blocks(s.max_tokens));
  st.max_candidates = config.num_sel_blocks(s.max_tokens);
  st.streams = s.shared_kv ? 1 : 3;
  st.scale_log2 = static_cast<float>(config.scale_for(s.d_k)) * detail::kLog2e;
  const std::size_t select_smem = detail::decode_select_smem(static_cast<int>(st.group), st.max_candidates, config.top_n());
  if (select_smem > 160 * 1024)
    throw Error("cuda::DecodeCache: max_tokens = " + dstr(s.max_tokens) + " is too long for the top-n kernel (" +
                dstr(st.max_candidates) + " selection blocks; at most about 40000)");
  const std::size_t elt = sizeof(typename State::T);
  const double total = double(s.max_seqs) * double(s.kv_heads) * double(s.d_k + s.d_v) * double(elt) *
                       (double(st.streams) * double(s.max_tokens) + double(st.max_cmp));
  if (total > 1e12) throw Error("cuda::DecodeCache: capacity needs " + dstr(index_t(total)) + " bytes");
  for (int b = 0; b < st.streams; ++b) {
    st.k[b].reserve(std::size_t(s.max_seqs) * s.max_tokens * s.kv_heads * s.d_k * elt);
    st.v[b].reserve(std::size_t(s.max_seqs) * s.max_tokens * s.kv_heads * s.d_v * elt);
  }
  st.kc.reserve(std::size_t(s.max_seqs) * st.max_cmp * s.kv_heads * s.d_k * elt);
  st.vc.reserve(std::size_t(s.max_seqs) * st.max_cmp * s.kv_heads * s.d_v * elt);
  // phi's weights, copied (device or host source: cudaMemcpyDefault).
  const index_t l = config.block_len();
  for (int kind = 0; kind < 2; ++kind) {
    const PhiWeights<Tag>& w = kind == 0 ? phi_k : phi_v;
    const index_t dim = kind == 0 ? s.d_k : s.d_v, hidden = config.phi_hidden_for(dim);
    PhiWeights<Tag>& out = st.phi[kind];
    auto take = [&](int slot, const Tag* src, index_t n) -> const Tag* {
      DeviceBuffer& b = st.phi_buf[kind][slot];
      b.reserve(std::size_t(n) * sizeof(Tag));
      NSA_CUDA_CHECK(cudaMemcpy(b.data(), src, std::size_t(n) * sizeof(Tag), cudaMemcpyDefault));
      return b.as<const Tag>();
    };
    if (config.phi() == PhiKind::mlp) {
      out.pe = take(0, w.pe, l * dim);
      out.w1 = take(1, w.w1, hidden * l * dim);
      out.b1 = take(2, w.b1, hidden);
      out.w2 = take(3, w.w2, dim * hidden);
      out.b2 = take(4, w.b2, dim);
    } else if (config.phi() == PhiKind::linear) {
      out.pe = take(0, w.pe, l * dim);
      out.w = take(5, w.w, dim * l * dim);
    }
  }
  st.pos.assign(static_cast<std::size_t>(s.max_seqs), 0);
  st.sms = detail::device_sms();
  NSA_CUDA_CHECK(cudaEventCreateWithFlags(&st.plan_done, cudaEventDisableTiming));
}

template <class Tag> DecodeCache<Tag>::~DecodeCache() = default;
template <class Tag> DecodeCache<Tag>::DecodeCache(DecodeCache&&) noexcept = default;
template <class Tag> DecodeCache<Tag>& DecodeCache<Tag>::operator=(DecodeCache&&) noexcept = default;

template <class Tag> const Config& DecodeCache<Tag>::config() const { return state_->config; }
template <class Tag> const DecodeCacheShape& DecodeCache<Tag>::shape() const { return state_->shape; }

template <class Tag>
index_t DecodeCache<Tag>::position(index_t seq) const {
  state_->check_seq(seq, "cuda::DecodeCache::position");
  return state_->pos[seq];
}

template <class Tag>
index_t DecodeCache<Tag>::num_cmp_blocks(index_t seq) const {
  return state_->config.num_cmp_blocks(position(seq));
}

template <class Tag>
void DecodeCache<Tag>::reset(index_t seq) {
  state_->check_seq(seq, "cuda::DecodeCache::reset");
  state_->pos[seq] = 0;
}

template <class Tag>
std::size_t DecodeCache<Tag>::memory_bytes() const {
  const State& st = *state_;
  std::size_t n = st.kc.bytes() + st.vc.bytes();
  for (int b = 0; b < 3; ++b) n += st.k[b].bytes() + st.v[b].bytes();
  for (const auto& kind : st.phi_buf)
    for (const auto& b : kind) n += b.bytes();
  return n;
}

template <class Tag>
std::vector<std::int32_t> DecodeCache<Tag>::last_selection(index_t item, index_t kv_head, void* stream) const {
  const State& st = *state_;
  if (item < 0 || item >= st.last_count)
    throw Error("cuda::DecodeCache::last_selection: item " + detail::dstr(item) + " out of range [0, " +
                detail::dstr(st.last_count) + ") of the last step");
  if (kv_head < 0 || kv_head >= st.shape.kv_heads)
    throw Error("cuda::DecodeCache::last_selection: kv_head " + detail::dstr(kv_head) + " out of range");
  synchronize(stream);
  std::vector<std::int32_t> out(static_cast<std::size_t>(st.config.top_n()));
  NSA_CUDA_CHECK(cudaMemcpy(out.data(), st.last_sel + (item * st.shape.kv_heads + kv_head) * st.config.top_n(),
                            out.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost));
  return out;
}

template <class Tag>
void DecodeCache<Tag>::prefill(index_t seq, const DecodeTokens<Tag>& x, TensorView<Tag> out, void* stream_ptr) {
  using detail::dstr;
  State& st = *state_;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const char* what = "cuda::DecodeCache::prefill";
  st.check_seq(seq, what);
  if (st.pos[seq] != 0)
    throw Error(std::string(what) + ": sequence " + dstr(seq) + " is not empty (" + dstr(st.pos[seq]) +
                " tokens); use step, or reset it first");
  const index_t T = x.q.shape[1];
  if (x.q.data == nullptr && T == 0) return;
  if (T > st.shape.max_tokens)
    throw Error(std::string(what) + ": prompt of " + dstr(T) + " tokens exceeds the capacity max_tokens = " +
                dstr(st.shape.max_tokens));
  if (T == 0) return;
  st.check_tokens(x, 1, T, /*queries=*/true, what);
  nsa::detail::check_view(out, "cuda::DecodeCache::prefill: out");
  nsa::detail::check_shape(out, "cuda::DecodeCache::prefill: out", 1, T, st.shape.heads, st.shape.d_v);

  NsaInputs<Tag> in;
  in.q = x.q;
  in.k_cmp = x.k_cmp;
  in.v_cmp = x.v_cmp;
  in.k_slc = st.shape.shared_kv ? x.k_cmp : x.k_slc;
  in.v_slc = st.shape.shared_kv ? x.v_cmp : x.v_slc;
  in.k_win = st.shape.shared_kv ? x.k_cmp : x.k_win;
  in.v_win = st.shape.shared_kv ? x.v_cmp : x.v_win;
  in.gates = x.gates;
  in.phi_k = st.phi[0];
  in.phi_v = st.phi[1];
  nsa_forward<Tag>(st.config, in, out, &st.saved, st.fwd_ws, stream_ptr);  // validates alignment too

  detail::DecodeItem* items = nullptr;
  st.upload_plan({{seq, 0, 0}}, {}, {}, stream, &items, nullptr, nullptr);
  st.launch_append(x, items, 1, T, stream);
  const index_t ncmp = st.config.num_cmp_blocks(T);
  if (ncmp > 0) {
    using D = typename State::T;
    const index_t Hkv = st.shape.kv_heads, dk = st.shape.d_k, dv = st.shape.d_v;
    NSA_CUDA_CHECK(cudaMemcpyAsync(st.kc.template as<D>() + seq * st.cmp_seq_stride(dk), st.saved.k_cmp_blocks.data(),
                                   std::size_t(ncmp) * Hkv * dk * sizeof(D), cudaMemcpyDeviceToDevice, stream));
    NSA_CUDA_CHECK(cudaMemcpyAsync(st.vc.template as<D>() + seq * st.cmp_seq_stride(dv), st.saved.v_cmp_blocks.data(),
                                   std::size_t(ncmp) * Hkv * dv * sizeof(D), cudaMemcpyDeviceToDevice, stream));
  }
  st.pos[seq] = T;
}

template <class Tag>
void DecodeCache<Tag>::append(index_t seq, const DecodeTokens<Tag>& x, void* stream_ptr) {
  using detail::dstr;
  State& st = *state_;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const char* what = "cuda::DecodeCache::append";
  st.check_seq(seq, what);
  const index_t T = x.k_cmp.shape[1];
  if (x.k_cmp.data == nullptr && T == 0) return;
  const index_t p0 = st.pos[seq];
  if (T > st.shape.max_tokens - p0)
    throw Error(std::string(what) + ": " + dstr(T) + " tokens after " + dstr(p0) +
                " exceed the capacity max_tokens = " + dstr(st.shape.max_tokens));
  if (T == 0) return;
  st.check_tokens(x, 1, T, /*queries=*/false, what);
  const index_t i0 = st.config.num_cmp_blocks(p0), i1 = st.config.num_cmp_blocks(p0 + T);
  detail::DecodeItem* items = nullptr;
  detail::SeqInfo* info = nullptr;
  st.upload_plan({{seq, p0, 0}}, {}, {{seq, i0 * st.config.stride(), 0, 0, 0}}, stream, &items, nullptr, &info);
  st.launch_append(x, items, 1, T, stream);
  st.launch_phi_blocks(seq, i0, i1, info, stream);
  st.pos[seq] = p0 + T;
}

template <class Tag>
void DecodeCache<Tag>::step(const index_t* seqs, index_t count, const DecodeTokens<Tag>& x, TensorView<Tag> out,
                            void* stream_ptr) {
  using namespace detail;
  State& st = *state_;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const char* what = "cuda::DecodeCache::step";
  const Config& cfg = st.config;
  const DecodeCacheShape& sh = st.shape;
  if (count < 0) throw Error(std::string(what) + ": negative count");
  if (count == 0) return;
  if (seqs == nullptr) throw Error(std::string(what) + ": seqs is null");
  if (count > 65535) throw Error(std::string(what) + ": at most 65535 sequences per step, got " + dstr(count));
  {
    std::vector<index_t> ids(seqs, seqs + count);
    for (index_t id : ids) st.check_seq(id, what);
    std::sort(ids.begin(), ids.end());
    for (std::size_t i = 1; i < ids.size(); ++i)
      if (ids[i] == ids[i - 1]) throw Error(std::string(what) + ": sequence id " + dstr(ids[i]) + " appears twice");
    for (index_t id : ids)
      if (st.pos[id] >= sh.max_tokens)
        throw Error(std::string(what) + ": sequence " + dstr(id) + " is full (capacity max_tokens = " +
                    dstr(sh.max_tokens) + ")");
  }
  st.check_tokens(x, count, 1, /*queries=*/true, what);
  nsa::detail::check_view(out, "cuda::DecodeCache::step: out");
  nsa::detail::check_shape(out, "cuda::DecodeCache::step: out", count, 1, sh.heads, sh.d_v);

  // 0. Plan.
  const index_t l = cfg.block_len(), d = cfg.stride(), lp = cfg.sel_block();
  std::vector<DecodeItem> items(static_cast<std::size_t>(count));
  std::vector<PhiRow> rows;
  std::int64_t max_cmp = 0, max_slc = 0, max_win = 0;
  for (index_t b = 0; b < count; ++b) {
    const index_t seq = seqs[b], t = st.pos[seq];
    items[b] = {seq, t, cfg.visible_cmp_blocks(t)};
    if (t >= l - 1 && (t - l + 1) % d == 0)
      for (index_t hk = 0; hk < sh.kv_heads; ++hk) rows.push_back({seq, (t - l + 1) / d, static_cast<int>(hk)});
    max_cmp = std::max(max_cmp, items[b].ncmp);
    max_slc = std::max<std::int64_t>(max_slc, std::min<index_t>(cfg.top_n(), t / lp + 1) * lp);
    max_win = std::max<std::int64_t>(max_win, std::min<index_t>(t + 1, cfg.window()));
  }
  DecodeItem* d_items = nullptr;
  PhiRow* d_rows = nullptr;
  st.upload_plan(items, rows, {}, stream, &d_items, &d_rows, nullptr);

  // 1-2. Store K/V, compress the completed blocks.
  st.launch_append(x, d_items, count, 1, stream);
  if (!rows.empty()) st.launch_phi_rows(d_rows, static_cast<int>(rows.size()), stream);

  // 3. Compression branch partials and scores.
  const index_t H = sh.heads, Hkv = sh.kv_heads, G = st.group, dv = sh.d_v;
  DecodeAttendParams ap{};
  ap.q = x.q.data;
  ap.q_sb = x.q.stride[0];
  ap.q_sh = x.q.stride[2];
  ap.items = d_items;
  ap.H = static_cast<int>(H);
  ap.H_kv = static_cast<int>(Hkv);
  ap.G = static_cast<int>(G);
  head_chunks(ap.G, &ap.gh, &ap.head_chunks);
  ap.dk = static_cast<int>(sh.d_k);
  ap.dv = static_cast<int>(dv);
  ap.scale_log2 = st.scale_log2;
  ap.sel_block = cfg.sel_block();
  ap.top_n = cfg.top_n();
  ap.window = cfg.window();
  const std::int64_t groups = count * Hkv * ap.head_chunks;
  const std::int64_t logit_stride = std::max<std::int64_t>(max_cmp, 1);
  {
    DecodeBranch& br = ap.br[0];
    br.k = st.kc.data();
    br.v = st.vc.data();
    br.k_ss = st.cmp_seq_stride(sh.d_k);
    br.k_st = Hkv * sh.d_k;
    br.v_ss = st.cmp_seq_stride(dv);
    br.v_st = Hkv * dv;
    br.mode = kKeysCmp;
    const SplitPlan sp = choose_splits(max_cmp, groups, st.sms);
    br.split_keys = sp.split_keys;
    partial_buffers(st.ws, 0, count, H, sp.splits, dv, br);
    ap.nbr = 1;
    ap.logits = static_cast<float*>(st.ws.get(kDecLogits, std::size_t(count) * H * logit_stride * sizeof(float)));
    ap.logit_stride = logit_stride;
    launch_attend<typename State::T>(ap, br.splits, static_cast<int>(count), stream);
  }

  // 4. o_cmp, importance, top-n.
  auto* sel = static_cast<std::int32_t*>(st.ws.get(kDecSel, std::size_t(count) * Hkv * cfg.top_n() * sizeof(std::int32_t)));
  float* o_cmp = static_cast<float*>(st.ws.get(kDecOcmp, std::size_t(count) * H * dv * sizeof(float)));
  {
    DecodeSelectParams sp{};
    sp.items = d_items;
    sp.part_m = ap.br[0].part_m;
    sp.part_l = ap.br[0].part_l;
    sp.part_acc = ap.br[0].part_acc;
    sp.splits = ap.br[0].splits;
    sp.logits = ap.logits;
    sp.logit_stride = logit_stride;
    sp.imp = static_cast<float*>(st.ws.get(kDecImp, std::size_t(count) * Hkv * logit_stride * sizeof(float)));
    sp.o_cmp = o_cmp;
    sp.sel = sel;
    sp.H = ap.H;
    sp.H_kv = ap.H_kv;
    sp.G = ap.G;
    sp.dv = ap.dv;
    sp.top_n = cfg.top_n();
    sp.n_init = cfg.n_init();
    sp.n_local = cfg.n_local();
    sp.sel_block = cfg.sel_block();
    sp.block_len = cfg.block_len();
    sp.stride = cfg.stride();
    const std::size_t smem = decode_select_smem(ap.G, st.max_candidates, cfg.top_n());
    NSA_CUDA_CHECK(cudaFuncSetAttribute(decode_select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    decode_select_kernel<<<dim3(static_cast<unsigned>(Hkv), static_cast<unsigned>(count)), 256, smem, stream>>>(sp);
    NSA_CUDA_CHECK_LAUNCH("decode_select_kernel");
  }

  // 5. Selection and window partials, one launch.
  {
    const int sb = st.streams > 1 ? 1 : 0, wb = st.streams > 1 ? 2 : 0;
    for (int i = 0; i < 2; ++i) {
      const int b = i == 0 ? sb : wb;
      DecodeBranch& br = ap.br[i];
      br = DecodeBranch{};
      br.k = st.k[b].data();
      br.v = st.v[b].data();
      br.k_ss = st.raw_seq_stride(sh.d_k);
      br.k_st = Hkv * sh.d_k;
      br.v_ss = st.raw_seq_stride(dv);
      br.v_st = Hkv * dv;
      br.mode = i == 0 ? kKeysSlc : kKeysWin;
      const SplitPlan spl = choose_splits(i == 0 ? max_slc : max_win, groups, st.sms);
      br.split_keys = spl.split_keys;
      partial_buffers(st.ws, 1 + i, count, H, spl.splits, dv, br);
    }
    ap.nbr = 2;
    ap.sel = sel;
    ap.logits = nullptr;
    launch_attend<typename State::T>(ap, ap.br[0].splits + ap.br[1].splits, static_cast<int>(count), stream);
  }

  // 6. Merge and gated sum.
  {
    DecodeCombineParams cp{};
    for (int i = 0; i < 2; ++i) {
      cp.part_m[i] = ap.br[i].part_m;
      cp.part_l[i] = ap.br[i].part_l;
      cp.part_acc[i] = ap.br[i].part_acc;
      cp.splits[i] = ap.br[i].splits;
      cp.gate_index[i] = 1 + i;
    }
    cp.nbr = 2;
    cp.o_cmp = o_cmp;
    cp.gates = x.gates.data;
    cp.g_sb = x.gates.stride[0];
    cp.g_sh = x.gates.stride[2];
    cp.out = out.data;
    cp.o_sb = out.stride[0];
    cp.o_sh = out.stride[2];
    cp.H = ap.H;
    cp.dv = ap.dv;
    decode_combine_kernel<typename State::T><<<dim3(static_cast<unsigned>(H), static_cast<unsigned>(count)), 128, 0, stream>>>(cp);
    NSA_CUDA_CHECK_LAUNCH("decode_combine_kernel");
  }

  for (index_t b = 0; b < count; ++b) ++st.pos[seqs[b]];
  st.last_count = count;
  st.last_sel = sel;
}

template <class Tag>
void dense_decode_step(const Tag* q, const Tag* k, const Tag* v, index_t tokens, index_t heads, index_t kv_heads,
                       index_t d_k, index_t d_v, double scale, Tag* out, Workspace& ws, void* stream_ptr) {
  using namespace detail;
  using T = typename DeviceType<Tag>::type;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const std::string what = "cuda::dense_decode_step: ";
  if (tokens <= 0) throw Error(what + "tokens must be positive, got " + dstr(tokens));
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0)
    throw Error(what + "query heads H = " + dstr(heads) + " must be a positive multiple of H_kv = " + dstr(kv_heads));
  if (heads > 65535) throw Error(what + "at most 65535 heads");
  check_decode_dims(d_k, d_v);
  if (!(scale >= 0.0) || !std::isfinite(scale)) throw Error(what + "scale must be finite and >= 0");
  for (auto [ptr, name] : {std::pair<const void*, const char*>{q, "q"}, {k, "k"}, {v, "v"}, {out, "out"}}) {
    if (ptr == nullptr) throw Error(what + name + " is null");
    if (reinterpret_cast<std::uintptr_t>(ptr) % 16 != 0) throw Error(what + name + " must be 16-byte aligned");
  }
  const double sc = scale > 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(d_k));
  DecodeAttendParams ap{};
  DecodeBranch& br = ap.br[0];
  br.k = k;
  br.v = v;
  br.k_st = kv_heads * d_k;
  br.v_st = kv_heads * d_v;
  br.mode = kKeysDense;
  ap.nbr = 1;
  ap.q = q;
  ap.q_sb = 0;
  ap.q_sh = d_k;
  ap.items = nullptr;
  ap.single = {0, tokens - 1, 0};
  ap.H = static_cast<int>(heads);
  ap.H_kv = static_cast<int>(kv_heads);
  ap.G = static_cast<int>(heads / kv_heads);
  head_chunks(ap.G, &ap.gh, &ap.head_chunks);
  ap.dk = static_cast<int>(d_k);
  ap.dv = static_cast<int>(d_v);
  ap.scale_log2 = static_cast<float>(sc) * kLog2e;
  const SplitPlan sp = choose_splits(tokens, kv_heads * ap.head_chunks, device_sms());
  br.split_keys = sp.split_keys;
  partial_buffers(ws, 0, 1, heads, sp.splits, d_v, br);
  launch_attend<T>(ap, br.splits, 1, stream);

  DecodeCombineParams cp{};
  cp.part_m[0] = br.part_m;
  cp.part_l[0] = br.part_l;
  cp.part_acc[0] = br.part_acc;
  cp.splits[0] = br.splits;
  cp.gate_index[0] = 0;
  cp.nbr = 1;
  cp.out = out;
  cp.o_sh = d_v;
  cp.H = ap.H;
  cp.dv = ap.dv;
  decode_combine_kernel<T><<<dim3(static_cast<unsigned>(heads), 1), 128, 0, stream>>>(cp);
  NSA_CUDA_CHECK_LAUNCH("decode_combine_kernel");
}

}  // namespace nsa::cuda

// Explicit instantiation of the decode API for one storage type.
#define NSA_CUDA_DECODE_INSTANTIATE(Tag)                                                                  \
  template class nsa::cuda::DecodeCache<Tag>;                                                             \
  template void nsa::cuda::dense_decode_step<Tag>(const Tag*, const Tag*, const Tag*, nsa::index_t,       \
                                                  nsa::index_t, nsa::index_t, nsa::index_t, nsa::index_t, \
                                                  double, Tag*, nsa::cuda::Workspace&, void*);
