// The parameters of the compression function phi, defined once: their names, the phi
// kinds that use them and their shapes. PhiWeights (attention.h) and PhiGradients
// (backward.h) hold one pointer per field; the validation, the decode cache, the C API,
// the Python package, the test problems and the benchmarks walk this table instead of
// writing the list out again.
//
//   field  shape                 kinds
//   pe     [l, dim]              mlp, linear
//   w1     [hidden, l * dim]     mlp
//   b1     [hidden]              mlp
//   w2     [dim, hidden]         mlp
//   b2     [dim]                 mlp
//   w      [dim, l * dim]        linear
//   (mean has no parameters)
#pragma once

#include <array>
#include <vector>

#include "nsa/config.h"
#include "nsa/tensor.h"

namespace nsa {

enum class PhiField : int { pe, w1, b1, w2, b2, w };
inline constexpr std::array<PhiField, 6> kPhiFields = {PhiField::pe, PhiField::w1, PhiField::b1,
                                                       PhiField::w2, PhiField::b2, PhiField::w};

constexpr const char* phi_field_name(PhiField f) {
  constexpr const char* names[] = {"pe", "w1", "b1", "w2", "b2", "w"};
  return names[static_cast<int>(f)];
}

constexpr bool phi_field_used(PhiKind kind, PhiField f) {
  switch (kind) {
    case PhiKind::mlp: return f != PhiField::w;
    case PhiKind::linear: return f == PhiField::pe || f == PhiField::w;
    case PhiKind::mean: return false;
  }
  return false;
}

// The shape of field f for block length l, head dim `dim` and the mlp's hidden width
// (Config::phi_hidden_for(dim)): one or two sizes, row-major.
inline std::vector<index_t> phi_field_shape(PhiField f, index_t l, index_t dim, index_t hidden) {
  switch (f) {
    case PhiField::pe: return {l, dim};
    case PhiField::w1: return {hidden, l * dim};
    case PhiField::b1: return {hidden};
    case PhiField::w2: return {dim, hidden};
    case PhiField::b2: return {dim};
    case PhiField::w: return {dim, l * dim};
  }
  return {};
}

// Whether field f is a linear map (w1, w2, w: [out, in], applied to a vector of its
// shape's second size) rather than an added vector (pe, b1, b2).
constexpr bool phi_field_is_matrix(PhiField f) {
  return f == PhiField::w1 || f == PhiField::w2 || f == PhiField::w;
}

// Elements of field f (the product of its shape).
inline index_t phi_field_size(PhiField f, index_t l, index_t dim, index_t hidden) {
  index_t n = 1;
  for (index_t s : phi_field_shape(f, l, dim, hidden)) n *= s;
  return n;
}

// The pointer of field f in a PhiWeights or PhiGradients (any struct with the six members).
template <class Phi>
constexpr auto& phi_field(Phi& phi, PhiField f) {
  switch (f) {
    case PhiField::pe: return phi.pe;
    case PhiField::w1: return phi.w1;
    case PhiField::b1: return phi.b1;
    case PhiField::w2: return phi.w2;
    case PhiField::b2: return phi.b2;
    case PhiField::w: break;
  }
  return phi.w;
}

// A PhiWeights / PhiGradients (Phi) pointing into per-field buffers: buffers[i] holds field
// kPhiFields[i] (anything with data() and empty(), e.g. std::vector); empty ones give null.
template <class Phi, class Buffer>
Phi phi_views(Buffer* buffers) {
  Phi out;
  for (PhiField f : kPhiFields) {
    Buffer& b = buffers[static_cast<int>(f)];
    if (!b.empty()) phi_field(out, f) = b.data();
  }
  return out;
}

}  // namespace nsa
