// The fused backend's CPU recurrence, compiled: one call walks all the steps of a chunk.
//
// Forward, per step t (rows [0, n) active; n = B unless packed):
//   z_t = gates_x[t] + h_{t-1} W_hh^T                       one product (addmm, in place)
//   i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_g)          one fused pass per row
//   c_t = f c_{t-1} + i g;  m_t = o tanh(c_t);  h_t = m_t (or W_hr m_t with a projection)
// and the activations (i, f, g, o), c_t, tanh(c_t) (and m_t) are stored for the backward,
// in the fused backend's layout (lstm.py): g is stored as tanh(z_g).
//
// Backward, per step t in reverse, carrying dh, dc (the gradients reaching h_t, c_t):
//   dm = dh (or dh W_hr);  dc += dm o (1 - tanh(c)^2)
//   dz = [dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dm tanh(c) o(1-o)]   fused pass
//   dc <- dc f (zeroed where path "c" is detached, scaled by the keep factor per row)
//   dh <- d_out[t-1] + dz W_hh   (path "h": the product is skipped where the whole
//                                 batch, or a population member, is detached at t)
// The weight gradients are large products over the chunk, left to backward.py.
//
// Population (weights (K, ...)): member k owns rows [k B, (k+1) B); each member's product
// is its own, with the shapes of a lone model, and the element-wise passes go row by row,
// so that a member's results are bitwise those of its lone twin.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using at::Tensor;

// exp for float in plain arithmetic, so that the compiler vectorises the loops that call
// it (libm's expf is not vectorised without -ffast-math). exp(x) = 2^n exp(r) with
// n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in two parts so that
// n ln 2 is exact enough), exp(r) by its Taylor polynomial of degree 7 (error < 1e-8).
inline float exp_float(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid_of(float x) { return 1.0f / (1.0f + exp_float(-x)); }
inline double sigmoid_of(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow, no branch.
inline float tanh_of(float x) {
  const float e = exp_float(-2.0f * std::fabs(x));
  return std::copysign((1.0f - e) / (1.0f + e), x);
}
inline double tanh_of(double x) { return std::tanh(x); }

// One row of a forward step: z (4H) holds the pre-activations and receives (i, f, g, o);
// c_prev (H) -> cell, tanh_cell, m (H).
template <typename T>
void forward_row(T* __restrict z, const T* __restrict c_prev, T* __restrict cell,
                 T* __restrict tanh_cell, T* __restrict m, int64_t H) {
  T* __restrict zi = z;
  T* __restrict zf = z + H;
  T* __restrict zg = z + 2 * H;
  T* __restrict zo = z + 3 * H;
  for (int64_t j = 0; j < H; ++j) {
    const T i = sigmoid_of(zi[j]);
    const T f = sigmoid_of(zf[j]);
    const T g = tanh_of(zg[j]);
    const T o = sigmoid_of(zo[j]);
    const T c = f * c_prev[j] + i * g;
    const T tc = tanh_of(c);
    zi[j] = i;
    zf[j] = f;
    zg[j] = g;
    zo[j] = o;
    cell[j] = c;
    tanh_cell[j] = tc;
    m[j] = o * tc;
  }
}

// One row of a backward step. a (4H): stored (i, f, g, o); tc: tanh(c_t); c_prev: c_{t-1};
// dm: gradient reaching m_t; dc (H): in, the gradient reaching c_t from later steps; out,
// ``dc_scale`` times the gradient reaching c_{t-1} (0: path c detached, else 1 or the
// row's keep factor). dz (4H) receives the gate gradients.
template <typename T>
void backward_row(const T* __restrict a, const T* __restrict tc, const T* __restrict c_prev,
                  const T* __restrict dm, T* __restrict dc, T* __restrict dz, T dc_scale,
                  int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T i = a[j];
    const T f = a[H + j];
    const T g = a[2 * H + j];
    const T o = a[3 * H + j];
    const T t = tc[j];
    const T d_m = dm[j];
    const T d_c = dc[j] + d_m * o * (T(1) - t * t);
    dz[j] = d_c * g * i * (T(1) - i);
    dz[H + j] = d_c * c_prev[j] * f * (T(1) - f);
    dz[2 * H + j] = d_c * i * (T(1) - g * g);
    dz[3 * H + j] = d_m * t * o * (T(1) - o);
    dc[j] = d_c * f * dc_scale;
  }
}

// Rows per task of a parallel element-wise pass: at least 16 K floats of gates, so that
// a task outweighs handing it to another thread (on one thread the pass runs inline).
inline int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 16384 / (4 * H)); }

// Active rows at step t: batch_sizes[t] when packed, else the whole batch.
inline int64_t rows_at(const std::vector<int64_t>& sizes, int64_t t, int64_t batch) {
  return sizes.empty() ? batch : sizes[t];
}

// Weight of member k: w itself for one model (2-D), w[k] for a population (3-D).
inline Tensor member_weight(const Tensor& w, int64_t k) { return w.dim() == 3 ? w[k] : w; }

void check_cpu_contiguous(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "hdetach_cpu: ", name,
              " must be a contiguous CPU tensor");
}

// Steps [start, start + S) of one layer, S = gates.size(0). See the file's comment.
// gates (S, B, 4H): in, the input part of the gates; out, the activations.
// h (>= n0, P), c (>= n0, H): the state entering step ``start``.
// out (T, B, P): the whole layer's output, rows of steps [start, start + S) written.
// cells, tanh_cells (S, B, H); pre_projection (S, B, H) with w_hr, else unused.
// h_n (B, P), c_n (B, H): each row's state after its last step, written where it ends.
void forward_chunk(const Tensor& gates, const Tensor& h, const Tensor& c, const Tensor& w_hh,
                   const std::optional<Tensor>& w_hr, const Tensor& out, const Tensor& cells,
                   const Tensor& tanh_cells, const std::optional<Tensor>& pre_projection,
                   const Tensor& h_n, const Tensor& c_n, at::IntArrayRef batch_sizes,
                   int64_t start) {
  for (const auto& [t, name] : {std::pair{gates, "gates"}, {h, "h"}, {c, "c"}, {out, "out"},
                                {cells, "cells"}, {tanh_cells, "tanh_cells"}, {h_n, "h_n"},
                                {c_n, "c_n"}}) {
    check_cpu_contiguous(t, name);
  }
  const bool projected = w_hr.has_value();
  const int64_t S = gates.size(0), B = gates.size(1), H = cells.size(2);
  const int64_t T = out.size(0), P = out.size(2);
  const int64_t K = w_hh.dim() == 3 ? w_hh.size(0) : 1;
  const std::vector<int64_t> sizes(batch_sizes.begin(), batch_sizes.end());
  std::vector<Tensor> w_hh_t, w_hr_t;  // per member, transposed views (no copy)
  for (int64_t k = 0; k < K; ++k) {
    w_hh_t.push_back(member_weight(w_hh, k).t());
    if (projected) w_hr_t.push_back(member_weight(*w_hr, k).t());
  }
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "hdetach_forward_chunk", [&] {
    Tensor h_prev = h, c_prev = c;
    for (int64_t k = 0; k < S; ++k) {
      const int64_t t = start + k;
      const int64_t n = rows_at(sizes, t, B);
      Tensor z = gates[k].narrow(0, 0, n);
      const int64_t rows = n / K;  // a population is never packed: n = K B
      for (int64_t member = 0; member < K; ++member) {
        Tensor part = K == 1 ? z : z.narrow(0, member * rows, rows);
        Tensor h_part = h_prev.narrow(0, member * rows, rows);
        part.addmm_(h_part, w_hh_t[member]);
      }
      Tensor m_all = projected ? (*pre_projection)[k] : out[t];
      scalar_t* zp = gates[k].data_ptr<scalar_t>();
      const scalar_t* cp = c_prev.data_ptr<scalar_t>();
      scalar_t* cellp = cells[k].data_ptr<scalar_t>();
      scalar_t* tcp = tanh_cells[k].data_ptr<scalar_t>();
      scalar_t* mp = m_all.data_ptr<scalar_t>();
      at::parallel_for(0, n, row_grain(H), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          forward_row<scalar_t>(zp + r * 4 * H, cp + r * H, cellp + r * H, tcp + r * H,
                                mp + r * H, H);
        }
      });
      if (projected) {
        for (int64_t member = 0; member < K; ++member) {
          Tensor o = out[t].narrow(0, member * rows, rows);
          at::mm_out(o, m_all.narrow(0, member * rows, rows), w_hr_t[member]);
        }
      }
      h_prev = out[t];
      c_prev = cells[k];
      const int64_t ended = t == T - 1 ? 0 : rows_at(sizes, t + 1, B);
      if (ended < n) {  // rows [ended, n) have taken their last step
        h_n.narrow(0, ended, n - ended).copy_(h_prev.narrow(0, ended, n - ended));
        c_n.narrow(0, ended, n - ended).copy_(c_prev.narrow(0, ended, n - ended));
      }
    }
    (void)P;
  });
}

// Steps [start, start + S) of one layer in reverse. See the file's comment.
// gates, cells, tanh_cells (S, B, .): the chunk's activations; c_before (B, H): the cell
// entering the chunk; d_out (T, B, P): the output's gradient; dh (B, P), dc (B, H): in,
// the gradients reaching the state after the chunk (d_out of its last step not yet
// added); out, those reaching the state entering it. dz (S, B, 4H) receives the gate
// gradients; dh_steps (S, B, P) each step's total dh (with w_hr, for dW_hr); dm (B, H) a
// scratch row block (with w_hr). d_bias (4H) or (K, 4H), if given, takes the chunk's sum of
// dz over steps and rows (per member), summed in double. cut (T, K) uint8: whether member k (the whole batch for
// K = 1) is detached at t; keep (T, B) or undefined: per-row keep factors (1 - mask).
void backward_chunk(const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
                    const Tensor& c_before, const Tensor& d_out, const Tensor& w_hh,
                    const std::optional<Tensor>& w_hr, const Tensor& dh, const Tensor& dc,
                    const Tensor& dz, const std::optional<Tensor>& dh_steps,
                    const std::optional<Tensor>& dm_buffer, const std::optional<Tensor>& d_bias,
                    const Tensor& cut,
                    const std::optional<Tensor>& keep, bool detach_h,
                    at::IntArrayRef batch_sizes, int64_t start) {
  for (const auto& [t, name] :
       {std::pair{gates, "gates"}, {cells, "cells"}, {tanh_cells, "tanh_cells"},
        {c_before, "c_before"}, {d_out, "d_out"}, {dh, "dh"}, {dc, "dc"}, {dz, "dz"},
        {cut, "cut"}}) {
    check_cpu_contiguous(t, name);
  }
  TORCH_CHECK(cut.scalar_type() == at::kByte, "hdetach_cpu: cut must be uint8");
  const bool projected = w_hr.has_value();
  const int64_t S = gates.size(0), B = gates.size(1), H = cells.size(2);
  const int64_t T = d_out.size(0);
  const int64_t K = w_hh.dim() == 3 ? w_hh.size(0) : 1;
  TORCH_CHECK(cut.size(0) == T && cut.size(1) == K, "hdetach_cpu: cut must be (T, K)");
  const std::vector<int64_t> sizes(batch_sizes.begin(), batch_sizes.end());
  const uint8_t* cutp = cut.data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "hdetach_backward_chunk", [&] {
    const scalar_t* keepp = keep.has_value() ? keep->data_ptr<scalar_t>() : nullptr;
    std::vector<double> bias_sum(d_bias.has_value() ? K * 4 * H : 0, 0.0);
    for (int64_t k = S - 1; k >= 0; --k) {
      const int64_t t = start + k;
      const int64_t n = rows_at(sizes, t, B);
      const int64_t rows = n / K;
      // Rows whose last step is t take d_out[t] here; the others took it with the
      // recurrent product of step t + 1.
      const int64_t ended = t == T - 1 ? 0 : rows_at(sizes, t + 1, B);
      if (ended < n) {
        dh.narrow(0, ended, n - ended).add_(d_out[t].narrow(0, ended, n - ended));
      }
      Tensor dh_t = dh.narrow(0, 0, n);
      Tensor dm_t = dh_t;  // the gradient reaching m_t = o_t tanh(c_t)
      if (projected) {
        (*dh_steps)[k].narrow(0, 0, n).copy_(dh_t);
        dm_t = dm_buffer->narrow(0, 0, n);
        for (int64_t member = 0; member < K; ++member) {
          Tensor part = dm_t.narrow(0, member * rows, rows);
          at::mm_out(part, dh_t.narrow(0, member * rows, rows), member_weight(*w_hr, member));
        }
      }
      const scalar_t* ap = gates[k].data_ptr<scalar_t>();
      const scalar_t* tcp = tanh_cells[k].data_ptr<scalar_t>();
      const scalar_t* cprevp = (k == 0 ? c_before : cells[k - 1]).data_ptr<scalar_t>();
      const scalar_t* dmp = dm_t.data_ptr<scalar_t>();
      scalar_t* dcp = dc.data_ptr<scalar_t>();
      scalar_t* dzp = dz[k].data_ptr<scalar_t>();
      // Rows are independent: each row's numbers do not depend on how rows are split
      // between threads.
      at::parallel_for(0, n, row_grain(H), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t member = r / rows;
          const bool whole = cutp[t * K + member] != 0;
          scalar_t scale = 1;
          if (!detach_h) {
            scale = whole ? scalar_t(0) : (keepp ? keepp[t * B + r] : scalar_t(1));
          }
          backward_row<scalar_t>(ap + r * 4 * H, tcp + r * H, cprevp + r * H, dmp + r * H,
                                 dcp + r * H, dzp + r * 4 * H, scale, H);
        }
      });
      if (!bias_sum.empty()) {  // in row order on one thread: the same sum on any threads
        for (int64_t r = 0; r < n; ++r) {
          double* acc = bias_sum.data() + (r / rows) * 4 * H;
          const scalar_t* row = dzp + r * 4 * H;
          for (int64_t j = 0; j < 4 * H; ++j) acc[j] += static_cast<double>(row[j]);
        }
      }
      // dh <- d_out[t - 1] + dz W_hh, the product skipped where path h is detached.
      Tensor dz_t = dz[k].narrow(0, 0, n);
      for (int64_t member = 0; member < K; ++member) {
        Tensor dh_part = dh_t.narrow(0, member * rows, rows);
        const bool whole = cutp[t * K + member] != 0;
        const bool skip = detach_h && whole;
        if (skip) {
          if (t > 0) {
            dh_part.copy_(d_out[t - 1].narrow(0, member * rows, rows));
          } else {
            dh_part.zero_();
          }
          continue;
        }
        Tensor dz_part = dz_t.narrow(0, member * rows, rows);
        const Tensor w = member_weight(w_hh, member);
        const bool scaled = detach_h && keepp != nullptr;
        if (t > 0 && !scaled) {
          at::addmm_out(dh_part, d_out[t - 1].narrow(0, member * rows, rows), dz_part, w);
        } else {
          at::mm_out(dh_part, dz_part, w);
        }
        if (scaled) {  // per-row keep factors on path h, then d_out[t - 1]
          scalar_t* dhp = dh_part.data_ptr<scalar_t>();
          const int64_t P = dh_part.size(1);
          const scalar_t* dop =
              t > 0 ? d_out[t - 1].narrow(0, member * rows, rows).data_ptr<scalar_t>() : nullptr;
          for (int64_t r = 0; r < rows; ++r) {
            const scalar_t factor = keepp[t * B + member * rows + r];
            for (int64_t j = 0; j < P; ++j) {
              dhp[r * P + j] = dhp[r * P + j] * factor + (dop ? dop[r * P + j] : scalar_t(0));
            }
          }
        }
      }
    }
    if (d_bias.has_value()) {
      check_cpu_contiguous(*d_bias, "d_bias");
      scalar_t* db = d_bias->data_ptr<scalar_t>();
      for (int64_t j = 0; j < K * 4 * H; ++j) db[j] += static_cast<scalar_t>(bias_sum[j]);
    }
  });
}

}  // namespace

TORCH_LIBRARY(hdetach_cpu, m) {
  m.def(
      "forward_chunk(Tensor(a!) gates, Tensor h, Tensor c, Tensor w_hh, Tensor? w_hr, "
      "Tensor(b!) out, Tensor(c!) cells, Tensor(d!) tanh_cells, Tensor(e!)? pre_projection, "
      "Tensor(f!) h_n, Tensor(g!) c_n, int[] batch_sizes, int start) -> ()");
  m.def(
      "backward_chunk(Tensor gates, Tensor cells, Tensor tanh_cells, Tensor c_before, "
      "Tensor d_out, Tensor w_hh, Tensor? w_hr, Tensor(a!) dh, Tensor(b!) dc, Tensor(c!) dz, "
      "Tensor(d!)? dh_steps, Tensor(e!)? dm, Tensor(f!)? d_bias, Tensor cut, Tensor? keep, "
      "bool detach_h, "
      "int[] batch_sizes, int start) -> ()");
}

TORCH_LIBRARY_IMPL(hdetach_cpu, CPU, m) {
  m.impl("forward_chunk", &forward_chunk);
  m.impl("backward_chunk", &backward_chunk);
}
