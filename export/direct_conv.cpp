// A direct sparse convolution for the CPU: each output row is the sum, over the layer's live
// weights of that output channel, of the weight times a row of the (zero-padded) input. No
// im2col: a live weight costs one fused multiply-add per output value and nothing else, and a
// dead one costs nothing. The output row is computed in strips of 8, 16 or 32 values held in
// vector registers while every live weight of the channel is added in, so the only memory
// traffic per weight is one load of input.
//
// Weights arrive grouped by output channel (CSR-like): starts[o] .. starts[o + 1] index the
// channel's live weights, each with its input channel, kernel row, kernel column and value. The
// offsets into the padded input depend on the input's size, so they are computed per call.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t LANES = 8;
// eight floats as one value (GCC and Clang vector extensions): one AVX register where the CPU
// has them, two SSE ones where not. The compilers did not vectorize the plain loop themselves.
typedef float lanes __attribute__((vector_size(LANES * sizeof(float))));

inline lanes load(const float* at) {
  lanes value;
  __builtin_memcpy(&value, at, sizeof(value));  // unaligned
  return value;
}

// One strip of V * LANES output values of one row, held in registers while each of the
// channel's `count` live weights is added in: acc = bias + sum_k w_k * src_k[x].
template <int V>
inline void strip(float* out, const float* in, const int64_t* offsets, const float* values,
                  int64_t count, float bias) {
  lanes acc[V];
  for (int v = 0; v < V; ++v) acc[v] = lanes{} + bias;
  for (int64_t k = 0; k < count; ++k) {
    const float* src = in + offsets[k];
    const lanes w = lanes{} + values[k];
    for (int v = 0; v < V; ++v) acc[v] += w * load(src + v * LANES);
  }
  for (int v = 0; v < V; ++v) __builtin_memcpy(out + v * LANES, &acc[v], sizeof(lanes));
}

// the larger of two values, NaN if either is: as max_pool2d carries a NaN through
inline float larger(float a, float b) { return (a > b || a != a) ? a : b; }

}  // namespace

// The input with `pad_h` rows of zeros above and below, and `pad_w` columns left and at least
// `pad_w` right (up to `padded_w`), written in one pass.
torch::Tensor padded_input(const torch::Tensor& x, int64_t pad_h, int64_t pad_w,
                           int64_t padded_w) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t padded_h = height + 2 * pad_h;
  auto padded = torch::empty({batch, channels, padded_h, padded_w}, x.options());
  const float* in = x.data_ptr<float>();
  float* out = padded.data_ptr<float>();
  at::parallel_for(0, batch * channels, 16, [&](int64_t first, int64_t last) {
    for (int64_t plane = first; plane < last; ++plane) {
      const float* source = in + plane * height * width;
      float* target = out + plane * padded_h * padded_w;
      std::fill(target, target + pad_h * padded_w, 0.0f);
      for (int64_t y = 0; y < height; ++y) {
        float* line = target + (pad_h + y) * padded_w;
        std::fill(line, line + pad_w, 0.0f);
        std::copy(source + y * width, source + (y + 1) * width, line + pad_w);
        std::fill(line + pad_w + width, line + padded_w, 0.0f);
      }
      std::fill(target + (pad_h + height) * padded_w, target + padded_h * padded_w, 0.0f);
    }
  });
  return padded;
}

// The convolution, then (each optional) a constant added per output value (`bias_map`, one
// (out_channels, out_h, out_w) image, as compaction leaves where it folded a constant through
// zero padding), a tensor of the output's shape added (`residual`: a ResNet block's shortcut), a
// ReLU, and a 2x2 max pool at stride 2: what follows a convolution in most CNNs, done while its
// output row is still in the cache instead of as four more passes.
torch::Tensor sparse_conv2d(torch::Tensor input, torch::Tensor starts, torch::Tensor channels,
                            torch::Tensor rows, torch::Tensor cols, torch::Tensor values,
                            torch::Tensor bias, torch::Tensor bias_map, torch::Tensor residual,
                            int64_t out_channels,
                            int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                            int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                            int64_t dilation_w, bool relu, bool pool) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat && input.device().is_cpu(),
              "sparse_conv2d takes a float32 (batch, channels, height, width) CPU tensor");
  auto x = input.contiguous();
  const int64_t batch = x.size(0), in_channels = x.size(1), height = x.size(2),
                width = x.size(3);
  const int64_t out_h = (height + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1;
  const int64_t out_w = (width + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0, "sparse_conv2d: the input is smaller than the kernel");
  TORCH_CHECK(!pool || (out_h >= 2 && out_w >= 2), "sparse_conv2d: too small to pool");
  const bool mapped = bias_map.defined() && bias_map.numel();
  TORCH_CHECK(!mapped || bias_map.numel() == out_channels * out_h * out_w,
              "sparse_conv2d: the bias map is not one value per output value");
  // a row is computed at stride 1 along the width (strided reads do not vectorize) and every
  // stride_w-th value kept, in whole strips of LANES: the padded input is wide enough for the
  // last strip's reads, whose values past the row's end are not written out
  const int64_t full_w = (out_w - 1) * stride_w + 1;
  const int64_t strips_w = (full_w + LANES - 1) / LANES * LANES;
  const int64_t padded_w =
      std::max(width + 2 * pad_w, strips_w + dilation_w * (kernel_w - 1));
  const int64_t padded_h = height + 2 * pad_h;
  auto padded = padded_input(x, pad_h, pad_w, padded_w);

  const int64_t live = values.numel();
  const int64_t plane = padded_h * padded_w;
  std::vector<int64_t> offsets(live);
  const auto* c = channels.data_ptr<int32_t>();
  const auto* r = rows.data_ptr<int32_t>();
  const auto* s = cols.data_ptr<int32_t>();
  for (int64_t k = 0; k < live; ++k)
    offsets[k] = c[k] * plane + r[k] * dilation_h * padded_w + s[k] * dilation_w;

  const bool added = residual.defined() && residual.numel();
  TORCH_CHECK(!added || (residual.sizes() == torch::IntArrayRef{batch, out_channels, out_h, out_w}
                         && residual.scalar_type() == torch::kFloat),
              "sparse_conv2d: the residual is not a float32 tensor of the output's shape");
  auto shortcut = added ? residual.contiguous() : residual;
  const float* res = added ? shortcut.data_ptr<float>() : nullptr;

  const int64_t final_h = pool ? out_h / 2 : out_h, final_w = pool ? out_w / 2 : out_w;
  auto out = torch::empty({batch, out_channels, final_h, final_w}, x.options());
  const auto* start = starts.data_ptr<int64_t>();
  const float* w = values.data_ptr<float>();
  const float* b = bias.defined() && bias.numel() ? bias.data_ptr<float>() : nullptr;
  const float* map = mapped ? bias_map.data_ptr<float>() : nullptr;
  const float* in = padded.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t* off = offsets.data();
  const int64_t in_image = in_channels * plane, out_image = out_channels * final_h * final_w;

  // one task per (image, output channel); small ones are grouped so a thread's share is worth
  // waking it for
  const int64_t work = std::max<int64_t>(1, live / std::max<int64_t>(out_channels, 1) * out_h);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(work, 1));
  at::parallel_for(0, batch * out_channels, grain, [&](int64_t first, int64_t last) {
    std::vector<float> row(strips_w), upper(out_w), lower(out_w);
    for (int64_t task = first; task < last; ++task) {
      const int64_t n = task / out_channels, ch = task % out_channels;
      const int64_t k0 = start[ch], count = start[ch + 1] - k0;
      const float bias_value = b ? b[ch] : 0.0f;
      const float* image = in + n * in_image;
      const float* channel_map = map ? map + ch * out_h * out_w : nullptr;
      const float* channel_res = res ? res + (n * out_channels + ch) * out_h * out_w : nullptr;
      float* target = o + n * out_image + ch * final_h * final_w;
      // output row y into `into` (out_w values), before the ReLU
      auto convolved = [&](int64_t y, float* into) {
        if (count == 0) {  // most channels of a layer at 99.9% sparsity: a constant
          std::fill(into, into + out_w, bias_value);
        } else {
          const float* line = image + y * stride_h * padded_w;
          int64_t x0 = 0;
          for (; x0 + 4 * LANES <= strips_w; x0 += 4 * LANES)
            strip<4>(row.data() + x0, line + x0, off + k0, w + k0, count, bias_value);
          for (; x0 + 2 * LANES <= strips_w; x0 += 2 * LANES)
            strip<2>(row.data() + x0, line + x0, off + k0, w + k0, count, bias_value);
          for (; x0 < strips_w; x0 += LANES)
            strip<1>(row.data() + x0, line + x0, off + k0, w + k0, count, bias_value);
          for (int64_t x = 0; x < out_w; ++x) into[x] = row[x * stride_w];
        }
        if (channel_map)
          for (int64_t x = 0; x < out_w; ++x) into[x] += channel_map[y * out_w + x];
        if (channel_res)
          for (int64_t x = 0; x < out_w; ++x) into[x] += channel_res[y * out_w + x];
      };
      // max(relu(a), relu(b)) = relu(max(a, b)): the ReLU goes last either way
      for (int64_t y = 0; y < final_h; ++y) {
        float* written = target + y * final_w;
        if (pool) {
          convolved(2 * y, upper.data());
          convolved(2 * y + 1, lower.data());
          for (int64_t x = 0; x < final_w; ++x)
            written[x] = larger(larger(upper[2 * x], upper[2 * x + 1]),
                                larger(lower[2 * x], lower[2 * x + 1]));
        } else {
          convolved(y, written);
        }
        if (relu)
          for (int64_t x = 0; x < final_w; ++x) written[x] = larger(written[x], 0.0f);
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sparse_conv2d", &sparse_conv2d, "direct sparse 2-d convolution (CPU, float32)");
}
