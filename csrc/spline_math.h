// The element-wise math of a rational-quadratic spline coupling (nflows' unconstrained_rational_quadratic_spline
// with linear tails; docs/spec.md), written once for the CPU and CUDA kernels: from one element's 3K - 1
// unconstrained parameters and its input, the output and log-det term (forward or inverse), and in the backward
// the gradient of the input and of every parameter, the log-det's incoming gradient included.
//
// Everything is recomputed from the parameters in registers, one pass over them at a time: the softmax
// normalizers, then the knots (a running sum) and the bin search, then the rational-quadratic formula of that bin,
// and in the backward a last pass that writes the parameters' gradients. No per-bin array is kept, so a CUDA
// thread needs a fixed handful of registers for any K, and the CPU kernels vectorize the loop over elements
// (`omp simd`) with each of these passes inside it: the code is branch-free (selects), every lane runs the same
// trip counts, and elements that are not transformed compute garbage that the final selects drop.
//
// A parameter accessor `p` gives the element's parameter j as p(j), j in [0, K) widths, [K, 2K) heights,
// [2K, 3K - 1) interior derivatives; a sink `sink(j, value)` takes the gradient of parameter j.
//
// Derivation of the backward. In bin k with knots (x0, y0), (x1, y1), w = x1 - x0, h = y1 - y0, s = h / w,
// theta = (x - x0) / w, t = theta (1 - theta), D = s + (d0 + d1 - 2 s) t, the forward is y = y0 + h R with
// R = (s theta^2 + d0 t) / D, and its slope f' = s^2 Q / D^2 with Q = d1 theta^2 + 2 s t + d0 (1 - theta)^2; the
// log-det term is L = log f'. The backward takes the partial derivatives of y and L in (theta, s, d0, d1) and
// chains them to the knots, then through the running sums and the softmax to the parameters:
//   d x_i / d u_j = 2 B (1 - K min_bin_width) sm_j ([j < i] - S_i), S_i the softmax mass of the bins left of knot i
// (the same for heights), and d d_i / d u = sigmoid(u). A loss sum(g y) + gl sum(L) (forward) has coefficients
// cy = g, cl = gl on the partials of y and L. The inverse x(z) solves f(x) = z, so dx/dz = 1 / f' and
// dx/dp = -(dy/dp) / f'; with its log-det term -L(x(z)) the same chain gives cy = (gl dL/dx - g) / f', cl = -gl and
// d/dz = -cy: both directions share the partials at the forward coordinate x.
#pragma once

#include <cmath>

#include "coupling_math.h"
#include "spline_layout.h"

namespace nf_kernels {
namespace math {
namespace {  // internal linkage, as coupling_math.h

// log comes from coupling_math.h (shared with the peers' scale maps).
NF_HOST_DEVICE float sqrt(float v) {
#if defined(__CUDA_ARCH__)
  return ::sqrtf(v);
#else
  return std::sqrt(v);  // one instruction (-fno-math-errno): it vectorizes
#endif
}

NF_HOST_DEVICE double sqrt(double v) { return ::sqrt(v); }

}  // namespace
}  // namespace math

namespace spline {
namespace {

// A call's constants in the compute type, made once per launch on the host.
template <class T>
struct Constants {
  int bins;          // K
  T bound;           // B
  T two_bound;       // 2 B
  T min_width;       // min_bin_width
  T width_scale;     // 1 - K min_bin_width
  T min_height;      // min_bin_height
  T height_scale;    // 1 - K min_bin_height
  T min_derivative;  // min_derivative
};

template <class T>
inline Constants<T> make_constants(const SplineConfig& config, int bins) {
  return {bins,
          static_cast<T>(config.bound),
          static_cast<T>(2 * config.bound),
          static_cast<T>(config.min_bin_width),
          static_cast<T>(1 - bins * config.min_bin_width),
          static_cast<T>(config.min_bin_height),
          static_cast<T>(1 - bins * config.min_bin_height),
          static_cast<T>(config.min_derivative)};
}

template <class T>
NF_HOST_DEVICE T abs_of(T v) {
  return v < T(0) ? -v : v;
}

// softplus(u) = log(1 + e^u) = max(u, 0) + log1p(e^-|u|): no overflow. NaN stays NaN.
template <class T>
NF_HOST_DEVICE T softplus(T u) {
  return (u > T(0) ? u : T(0)) + math::log1p(math::exp(-abs_of(u)));
}

// sigmoid(u) = softplus'(u), from e^-|u| in (0, 1]: no overflow.
template <class T>
NF_HOST_DEVICE T sigmoid(T u) {
  const T e = math::exp(-abs_of(u));
  const T r = T(1) / (T(1) + e);
  return u >= T(0) ? r : e * r;
}

// softmax(u)_j = exp(u_j - max) / sum = share(u_j).
template <class T>
struct Softmax {
  T max, inv_sum;
  NF_HOST_DEVICE T share(T u) const { return math::exp(u - max) * inv_sum; }
};

template <class T>
struct Normalizers {
  Softmax<T> widths, heights;  // parameters [0, K) and [K, 2K)
};

// Both softmax normalizers in one pass, online: the running sum is rescaled when a larger maximum comes, and
// exp(-|u - max|) serves both cases (one exponential a parameter). The pass is a start and a step a parameter, so
// that the CPU kernels can run each step over a chunk of elements (the loop over elements innermost, vectorized).
template <class T>
struct NormalizerRun {
  T max_w, sum_w, max_h, sum_h;  // the maxima so far and the sums of exp(u - max)
};

template <class T>
NF_HOST_DEVICE NormalizerRun<T> normalizer_start(T uw0, T uh0) {
  return {uw0, T(1), uh0, T(1)};
}

template <class T>
NF_HOST_DEVICE void online_add(T& max, T& sum, T u) {
  const T e = math::exp(-abs_of(u - max));
  const bool larger = u > max;
  sum = larger ? sum * e + T(1) : sum + e;
  max = larger ? u : max;
}

// Parameters j and K + j, for j in [1, K).
template <class T>
NF_HOST_DEVICE void normalizer_step(NormalizerRun<T>& r, T uw, T uh) {
  online_add(r.max_w, r.sum_w, uw);
  online_add(r.max_h, r.sum_h, uh);
}

template <class T>
NF_HOST_DEVICE Normalizers<T> normalizer_finish(const NormalizerRun<T>& r) {
  return {{r.max_w, T(1) / r.sum_w}, {r.max_h, T(1) / r.sum_h}};
}

template <class T, class P>
NF_HOST_DEVICE Normalizers<T> normalizers(const P& p, int bins) {
  NormalizerRun<T> r = normalizer_start(p(0), p(bins));
  for (int j = 1; j < bins; ++j) normalizer_step(r, p(j), p(bins + j));
  return normalizer_finish(r);
}

// The bin an element falls in and what the backward needs of the pass that found it.
template <class T>
struct Bin {
  int k;                        // in [0, K)
  T x0, x1, y0, y1;             // its knots
  T width_mass, height_mass;    // softmax mass of the bins left of k (S_k, widths and heights)
  T width_share, height_share;  // softmax of bin k itself
  T raw_d0, raw_d1;             // unconstrained derivatives at its knots (unused at the boundary knots)
};

// The knots, as nflows computes them: x_j = -B + 2B * cumsum(min_width + width_scale * softmax)_j, with x_0 = -B
// and x_K = B exactly (heights the same), and the bin: the last knot at or below v, by x (forward) or by y
// (inverse), clamped to [0, K - 1]. One pass over the bins' softmax shares: bin 0 at the start, then a step a bin
// j in [1, K) that takes the widths' and heights' shares of bin j and the derivative at knot j (parameter
// 2K + j - 1).
template <class T>
struct BinSearch {
  Bin<T> bin;                      // the last bin whose left knot was at or below v
  T cum_w, cum_h, mass_w, mass_h;  // the running sums up to knot j (normalized widths and softmax mass)
  T knot_x, knot_y;                // knot j, the left knot of the next step's bin
};

template <class T>
NF_HOST_DEVICE BinSearch<T> bin_search_start(const Constants<T>& c, T share_w0, T share_h0) {
  BinSearch<T> s;
  Bin<T>& bin = s.bin;
  bin.k = 0;
  bin.width_share = share_w0;
  bin.height_share = share_h0;
  s.cum_w = c.min_width + c.width_scale * bin.width_share;
  s.cum_h = c.min_height + c.height_scale * bin.height_share;
  bin.x0 = bin.y0 = -c.bound;
  bin.x1 = c.bins == 1 ? c.bound : -c.bound + c.two_bound * s.cum_w;
  bin.y1 = c.bins == 1 ? c.bound : -c.bound + c.two_bound * s.cum_h;
  bin.width_mass = bin.height_mass = T(0);
  bin.raw_d0 = bin.raw_d1 = T(0);
  s.knot_x = bin.x1, s.knot_y = bin.y1;
  s.mass_w = bin.width_share, s.mass_h = bin.height_share;
  return s;
}

template <bool kByHeight, class T>
NF_HOST_DEVICE void bin_search_step(BinSearch<T>& s, const Constants<T>& c, int j, T raw_d, T share_w, T share_h,
                                    T v) {
  Bin<T>& bin = s.bin;
  bin.raw_d1 = bin.k == j - 1 ? raw_d : bin.raw_d1;
  s.cum_w += c.min_width + c.width_scale * share_w;
  s.cum_h += c.min_height + c.height_scale * share_h;
  const bool last = j == c.bins - 1;
  const T next_x = last ? c.bound : -c.bound + c.two_bound * s.cum_w;
  const T next_y = last ? c.bound : -c.bound + c.two_bound * s.cum_h;
  const bool on = (kByHeight ? s.knot_y : s.knot_x) <= v;
  bin.k = on ? j : bin.k;
  bin.x0 = on ? s.knot_x : bin.x0;
  bin.x1 = on ? next_x : bin.x1;
  bin.y0 = on ? s.knot_y : bin.y0;
  bin.y1 = on ? next_y : bin.y1;
  bin.width_mass = on ? s.mass_w : bin.width_mass;
  bin.height_mass = on ? s.mass_h : bin.height_mass;
  bin.width_share = on ? share_w : bin.width_share;
  bin.height_share = on ? share_h : bin.height_share;
  bin.raw_d0 = on ? raw_d : bin.raw_d0;
  s.mass_w += share_w;
  s.mass_h += share_h;
  s.knot_x = next_x;
  s.knot_y = next_y;
}

template <bool kByHeight, class T, class P>
NF_HOST_DEVICE Bin<T> find_bin(const P& p, const Constants<T>& c, const Normalizers<T>& n, T v) {
  const int bins = c.bins;
  BinSearch<T> s = bin_search_start(c, n.widths.share(p(0)), n.heights.share(p(bins)));
  for (int j = 1; j < bins; ++j)
    bin_search_step<kByHeight>(s, c, j, p(2 * bins + j - 1), n.widths.share(p(j)), n.heights.share(p(bins + j)), v);
  return s.bin;
}

// The rational-quadratic piece of a bin.
template <class T>
struct Piece {
  T x0, w, y0, h, s, d0, d1;
};

template <class T>
NF_HOST_DEVICE Piece<T> piece_of(const Bin<T>& bin, const Constants<T>& c) {
  Piece<T> q;
  q.x0 = bin.x0;
  q.w = bin.x1 - bin.x0;
  q.y0 = bin.y0;
  q.h = bin.y1 - bin.y0;
  q.s = q.h / q.w;
  // The boundary knots' derivative is 1 (nflows pads with the parameter that maps to 1 - min_derivative). Both
  // computed, then selected: a select between plain values vectorizes, one around a call would not.
  const T d0 = c.min_derivative + softplus(bin.raw_d0), d1 = c.min_derivative + softplus(bin.raw_d1);
  q.d0 = bin.k == 0 ? T(1) : d0;
  q.d1 = bin.k == c.bins - 1 ? T(1) : d1;
  return q;
}

// theta of the inverse: the root of a theta^2 + b theta + c = 0 in [0, 1] as 2c / (-b - sqrt(b^2 - 4ac)), which
// never subtracts nearly equal numbers (b > 0 near the bin's left end, where c -> 0). Clamped to [0, 1], where the
// root lies: rounding near a knot can put it a hair outside, and there the slope's Q, with a small derivative at
// the knot, could turn negative (a NaN log-det).
template <class T>
NF_HOST_DEVICE T inverse_theta(const Piece<T>& q, T z) {
  const T rise = z - q.y0;
  const T bend = q.d0 + q.d1 - T(2) * q.s;
  const T a = q.h * (q.s - q.d0) + rise * bend;
  const T b = q.h * q.d0 - rise * bend;
  const T c = -q.s * rise;
  const T disc = b * b - T(4) * a * c;
  const T theta = T(2) * c / (-b - math::sqrt(disc > T(0) ? disc : T(0)));
  const T above = theta > T(1) ? T(1) : theta;
  return theta < T(0) ? T(0) : above;  // NaN stays NaN
}

// y, the slope's parts and log f' at theta.
template <class T>
struct Point {
  T theta, t, D, Q, R;  // t = theta (1 - theta), R = (s theta^2 + d0 t) / D
  T y, slope, log_slope;
};

template <class T>
NF_HOST_DEVICE Point<T> point_at(const Piece<T>& q, T theta) {
  Point<T> pt;
  pt.theta = theta;
  pt.t = theta * (T(1) - theta);
  const T one_minus = T(1) - theta;
  pt.D = q.s + (q.d0 + q.d1 - T(2) * q.s) * pt.t;
  pt.Q = q.d1 * theta * theta + T(2) * q.s * pt.t + q.d0 * one_minus * one_minus;
  pt.R = (q.s * theta * theta + q.d0 * pt.t) / pt.D;
  pt.y = q.y0 + q.h * pt.R;
  pt.slope = q.s * q.s * pt.Q / (pt.D * pt.D);
  pt.log_slope = math::log(pt.slope);
  return pt;
}

// Whether an element is transformed by the spline: selected by the mask and inside [-B, B] (NaN is not).
template <class T>
NF_HOST_DEVICE bool inside(const Constants<T>& c, T v, bool selected) {
  return selected & (v >= -c.bound) & (v <= c.bound);  // no short circuit: branch-free
}

template <class T>
struct Result {
  T value;   // y (forward) or x (inverse); the input itself where the element is not transformed
  T logdet;  // its log-det term: +-log f', 0 where not transformed
};

// The output and log-det term of an element in bin `bin`; `v` is the op's input (x forward, y inverse).
template <bool kReverse, class T>
NF_HOST_DEVICE Result<T> evaluate(const Bin<T>& bin, const Constants<T>& c, T v, bool selected) {
  const Piece<T> q = piece_of(bin, c);
  const T theta = kReverse ? inverse_theta(q, v) : (v - q.x0) / q.w;
  const Point<T> pt = point_at(q, theta);
  const T value = kReverse ? q.x0 + theta * q.w : pt.y;
  const bool on = inside(c, v, selected);
  return {on ? value : v, on ? (kReverse ? -pt.log_slope : pt.log_slope) : T(0)};
}

// What the parameters' gradients need of an element's backward: the loss's gradients at the bin's inner knots
// (zero at the constant knots 0 and K) and derivatives, and the softmax backward's offsets.
template <class T>
struct BinGrad {
  int k;
  bool on;  // transformed: else every parameter's gradient is 0
  T gx_left, gx_right, gy_left, gy_right;  // at knots k and k + 1
  T offset_w, offset_h;                    // S_k g_k + S_{k+1} g_{k+1}, widths and heights
  T g_raw_d0, g_raw_d1;                    // of the unconstrained derivatives at knots k and k + 1
  T grad_v;                                // of the op's input
};

// The local part of an element's backward, from the gradient g of its output and the sample's log-det gradient gl.
template <bool kReverse, class T>
NF_HOST_DEVICE BinGrad<T> local_backward(const Bin<T>& bin, const Constants<T>& c, T v, T g, T gl, bool selected) {
  const Piece<T> q = piece_of(bin, c);
  const T theta = kReverse ? inverse_theta(q, v) : (v - q.x0) / q.w;
  const Point<T> pt = point_at(q, theta);
  const T theta2 = theta * theta, one_minus = T(1) - theta, bend = q.d0 + q.d1 - T(2) * q.s;
  const T inv_D = T(1) / pt.D, inv_Q = T(1) / pt.Q, inv_w = T(1) / q.w;
  // Partials of R and of L = 2 log s + log Q - 2 log D in theta, s, d0 and d1.
  const T R_theta = q.s * pt.Q * inv_D * inv_D;
  const T R_s = (theta2 - pt.R * (T(1) - T(2) * pt.t)) * inv_D;
  const T R_d0 = pt.t * (T(1) - pt.R) * inv_D;
  const T R_d1 = -pt.t * pt.R * inv_D;
  const T Q_theta = T(2) * (q.d1 * theta + q.s * (T(1) - T(2) * theta) - q.d0 * one_minus);
  const T L_theta = Q_theta * inv_Q - T(2) * bend * (T(1) - T(2) * theta) * inv_D;
  const T L_s = T(2) / q.s + T(2) * pt.t * inv_Q - T(2) * (T(1) - T(2) * pt.t) * inv_D;
  const T L_d0 = one_minus * one_minus * inv_Q - T(2) * pt.t * inv_D;
  const T L_d1 = theta2 * inv_Q - T(2) * pt.t * inv_D;
  const T L_x = L_theta * inv_w;
  // The loss's coefficients on y and on L (see the top of the file), and the input's gradient.
  const T cy = kReverse ? (gl * L_x - g) / pt.slope : g;
  const T cl = kReverse ? -gl : gl;
  const T grad_x_fixed = cy * pt.slope + cl * L_x;  // d loss / d x at fixed knots
  // In (x0, w, y0, h): theta = (x - x0) / w and s = h / w; then to the knots, x1 = x0 + w and y1 = y0 + h.
  const T grad_w = -cy * q.s * (theta * R_theta + q.s * R_s) - cl * (theta * L_theta + q.s * L_s) * inv_w;
  const T grad_h = cy * (pt.R + q.s * R_s) + cl * L_s * inv_w;
  const T grad_d0 = cy * q.h * R_d0 + cl * L_d0, grad_d1 = cy * q.h * R_d1 + cl * L_d1;
  BinGrad<T> out;
  out.k = bin.k;
  out.on = inside(c, v, selected);
  const bool has_left = bin.k > 0, has_right = bin.k + 1 < c.bins;
  out.gx_left = has_left ? -grad_x_fixed - grad_w : T(0);
  out.gx_right = has_right ? grad_w : T(0);
  out.gy_left = has_left ? cy - grad_h : T(0);
  out.gy_right = has_right ? grad_h : T(0);
  out.offset_w = bin.width_mass * out.gx_left + (bin.width_mass + bin.width_share) * out.gx_right;
  out.offset_h = bin.height_mass * out.gy_left + (bin.height_mass + bin.height_share) * out.gy_right;
  out.g_raw_d0 = grad_d0 * sigmoid(bin.raw_d0);
  out.g_raw_d1 = grad_d1 * sigmoid(bin.raw_d1);
  out.grad_v = out.on ? (kReverse ? -cy : grad_x_fixed) : g;
  return out;
}

// The gradients of parameters j (width), K + j (height) and 2K + j - 1 (the derivative at knot j; none for j = 0):
// knot i in (0, K) moves with every width left of it, and the softmax's backward gives
// grad u_j = 2B width_scale sm_j ([j < k] g_k + [j <= k] g_{k+1} - offset); only the derivatives at knots k and
// k + 1 have one. 0 for an element that is not transformed.
template <class T>
struct ParameterGrads {
  T width, height, derivative;
};

template <class T>
NF_HOST_DEVICE ParameterGrads<T> parameter_gradients_at(const Constants<T>& c, const BinGrad<T>& bg, int j,
                                                        T share_w, T share_h) {
  const T below_w = (j < bg.k ? bg.gx_left : T(0)) + (j <= bg.k ? bg.gx_right : T(0));
  const T below_h = (j < bg.k ? bg.gy_left : T(0)) + (j <= bg.k ? bg.gy_right : T(0));
  const T gw = c.two_bound * c.width_scale * share_w * (below_w - bg.offset_w);
  const T gh = c.two_bound * c.height_scale * share_h * (below_h - bg.offset_h);
  const T gd = (j == bg.k ? bg.g_raw_d0 : T(0)) + (j == bg.k + 1 ? bg.g_raw_d1 : T(0));
  return {bg.on ? gw : T(0), bg.on ? gh : T(0), bg.on ? gd : T(0)};
}

// Every parameter's gradient, to sink(j, value), in one pass.
template <class T, class P, class Sink>
NF_HOST_DEVICE void parameter_gradients(const P& p, const Constants<T>& c, const Normalizers<T>& n,
                                        const BinGrad<T>& bg, Sink&& sink) {
  const int bins = c.bins;
  const ParameterGrads<T> first = parameter_gradients_at(c, bg, 0, n.widths.share(p(0)), n.heights.share(p(bins)));
  sink(0, first.width);
  sink(bins, first.height);
  for (int j = 1; j < bins; ++j) {
    const ParameterGrads<T> g = parameter_gradients_at(c, bg, j, n.widths.share(p(j)), n.heights.share(p(bins + j)));
    sink(j, g.width);
    sink(bins + j, g.height);
    sink(2 * bins + j - 1, g.derivative);
  }
}

// One element's output and log-det term, all passes in a row (the CUDA kernels; the CPU kernels run the passes
// over a chunk of elements each).
template <bool kReverse, class T, class P>
NF_HOST_DEVICE Result<T> element_forward(const P& p, const Constants<T>& c, T v, bool selected) {
  const Normalizers<T> n = normalizers<T>(p, c.bins);
  return evaluate<kReverse>(find_bin<kReverse>(p, c, n, v), c, v, selected);
}

// One element's backward: the gradient of its input (returned) and of each of its parameters (to `sink`). Not
// transformed: g passes through and the parameters' gradients are 0 (whatever the parameters hold, NaN included).
template <bool kReverse, class T, class P, class Sink>
NF_HOST_DEVICE T element_backward(const P& p, const Constants<T>& c, T v, T g, T gl, bool selected, Sink&& sink) {
  const Normalizers<T> n = normalizers<T>(p, c.bins);
  const BinGrad<T> bg = local_backward<kReverse>(find_bin<kReverse>(p, c, n, v), c, v, g, gl, selected);
  parameter_gradients(p, c, n, bg, sink);
  return bg.grad_v;
}

}  // namespace
}  // namespace spline
}  // namespace nf_kernels
