// Checking the arguments of the nf_kernels_ext spline ops and turning them into the torch-free SplineLayout the
// kernels take; shared by the CPU and CUDA glue, so both reject the same bad calls with the same messages (as
// op_arguments.h does for the affine ops, whose helpers for dtypes and outputs this reuses).
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "../spline_layout.h"
#include "op_arguments.h"

namespace nf_kernels {

// The validated call: contiguous tensors (kept alive here: the layout points into `transformed`), the layout and
// the spline's constants.
struct SplineCall {
  at::Tensor x;
  at::Tensor params;
  at::Tensor transformed;  // undefined unless the mask pattern
  SplineLayout layout;
  SplineConfig config;
};

// The spline ops' float arguments, in schema order.
struct SplineShape {
  double bound, min_bin_width, min_bin_height, min_derivative;
};

struct SplineForwardOp {
  SplineCall call;
  at::Tensor y;
  at::Tensor logdet;  // [B], in compute_type(x)
  bool empty = false;  // no sample or no element: the outputs are final
};

// The backward: grad_y converted to x's dtype and grad_logdet to the compute type, both contiguous; grad_params
// has params' dtype and shape.
struct SplineBackwardOp {
  SplineCall call;
  at::Tensor grad_y;
  at::Tensor grad_logdet;
  at::Tensor grad_x;
  at::Tensor grad_params;
  bool empty = false;
};

SplineForwardOp prepare_spline_forward(const char* op, const at::Tensor& x, const at::Tensor& params,
                                       const std::optional<at::Tensor>& transformed, at::IntArrayRef layout,
                                       const SplineShape& shape, bool poison);

SplineBackwardOp prepare_spline_backward(const char* op, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                         const at::Tensor& x, const at::Tensor& params,
                                         const std::optional<at::Tensor>& transformed, at::IntArrayRef layout,
                                         const SplineShape& shape, bool poison);

}  // namespace nf_kernels
