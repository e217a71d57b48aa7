// A direct sparse convolution for the CPU: each output value is the sum, over the live weights
// of its channel, of the weight times one value of the zero-padded input. No im2col: a live
// weight costs one fused multiply-add per output value and nothing else, and a dead one costs
// nothing.
//
// The padded image is read as one flat row: a weight at (input channel c, kernel row r, column
// s) reads the input at a fixed offset c * plane + r * padded_w + s from the output's position
// on the padded grid, so a channel's whole output (at stride 1) is one 1-d correlation over a
// span of (out_h - 1) * padded_w + out_w positions, some of them in the padding columns and
// never read out. The span is computed in strips of up to 64 values held in vector registers
// while every live weight of the channel is added in: per weight and strip, one broadcast and
// a load and a multiply-add per 8 values, and no row-by-row bookkeeping however small the image.
//
// Weights arrive grouped by output channel (CSR-like): starts[o] .. starts[o + 1] index the
// channel's live weights, each with its input channel, kernel row, kernel column and value. The
// offsets depend on the input's size, so they are computed per call.
// ATen and torch's Python bindings only, not <torch/extension.h> (all of torch's C++ frontend):
// the first build on a machine takes half as long (30 s against 60 here)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/python.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t LANES = 8;
// eight floats as one value (GCC and Clang vector extensions): one AVX register where the CPU
// has them, two SSE ones where not. The compilers did not vectorize the plain loop themselves.
typedef float lanes __attribute__((vector_size(LANES * sizeof(float))));
// the padded input's zeros past its end: the last strip of a span reads up to LANES - 1 past
// the last value it needs
constexpr int64_t SLACK = LANES;

inline lanes load(const float* at) {
  lanes value;
  __builtin_memcpy(&value, at, sizeof(value));  // unaligned
  return value;
}

// V * LANES consecutive values of a span, held in registers while each of the channel's `count`
// live weights is added in: out[x] = bias + sum_k w_k * in[offsets[k] + x].
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

inline int64_t rounded(int64_t n) { return (n + LANES - 1) / LANES * LANES; }

// `length` values (rounded up to LANES: in as few strips as that takes) of a span starting at
// `in`
void span(float* out, const float* in, int64_t length, const int64_t* offsets,
          const float* values, int64_t count, float bias) {
  length = rounded(length);
  int64_t x = 0;
  for (; x + 8 * LANES <= length; x += 8 * LANES)
    strip<8>(out + x, in + x, offsets, values, count, bias);
  for (; x + 4 * LANES <= length; x += 4 * LANES)
    strip<4>(out + x, in + x, offsets, values, count, bias);
  for (; x + 2 * LANES <= length; x += 2 * LANES)
    strip<2>(out + x, in + x, offsets, values, count, bias);
  for (; x < length; x += LANES) strip<1>(out + x, in + x, offsets, values, count, bias);
}

// the larger of two values, NaN if either is: as max_pool2d carries a NaN through
inline float larger(float a, float b) { return (a > b || a != a) ? a : b; }

// The input with `pad_h` rows of zeros above and below and `pad_w` columns left and right, and
// SLACK zeros after the last image.
torch::Tensor padded_input(const torch::Tensor& x, int64_t pad_h, int64_t pad_w) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t padded_h = height + 2 * pad_h, padded_w = width + 2 * pad_w;
  auto padded = torch::empty({batch * channels * padded_h * padded_w + SLACK}, x.options());
  const float* in = x.data_ptr<float>();
  float* out = padded.data_ptr<float>();
  // zeros everywhere first (one pass the CPU does fastest), then the rows copied in
  std::fill(out, out + padded.numel(), 0.0f);
  for (int64_t plane = 0; plane < batch * channels; ++plane) {
    const float* source = in + plane * height * width;
    float* target = out + (plane * padded_h + pad_h) * padded_w + pad_w;
    for (int64_t y = 0; y < height; ++y)
      std::copy(source + y * width, source + (y + 1) * width, target + y * padded_w);
  }
  return padded;
}

}  // namespace

// The convolution, then (each optional) a constant added per output value (`bias_map`, one
// (out_channels, out_h, out_w) image, as compaction leaves where it folded a constant through
// zero padding), a tensor of the output's shape added (`residual`: a ResNet block's shortcut), a
// ReLU, and a 2x2 max pool at stride 2: what follows a convolution in most CNNs, done while its
// output is still in the cache instead of as four more passes.
torch::Tensor sparse_conv2d(torch::Tensor input, torch::Tensor starts, torch::Tensor channels,
                            torch::Tensor rows, torch::Tensor cols, torch::Tensor values,
                            torch::Tensor bias, torch::Tensor bias_map, torch::Tensor residual,
                            int64_t out_channels, int64_t kernel_h, int64_t kernel_w,
                            int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                            int64_t dilation_h, int64_t dilation_w, bool relu, bool pool) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat && input.device().is_cpu(),
              "sparse_conv2d takes a float32 (batch, channels, height, width) CPU tensor");
  TORCH_CHECK(kernel_h > 0 && kernel_w > 0 && stride_h > 0 && stride_w > 0 && pad_h >= 0 &&
                  pad_w >= 0 && dilation_h > 0 && dilation_w > 0 && out_channels >= 0,
              "sparse_conv2d: the layer's geometry is not a convolution's");
  auto x = input;
  // a strided 1x1 convolution (a ResNet shortcut) reads only every stride-th pixel: those picked
  // out first, it is a convolution at stride 1 of a smaller image
  if (kernel_h == 1 && kernel_w == 1 && pad_h == 0 && pad_w == 0 && stride_h * stride_w > 1) {
    x = x.slice(2, 0, x.size(2), stride_h).slice(3, 0, x.size(3), stride_w);
    stride_h = stride_w = 1;
  }
  x = x.contiguous();
  const int64_t batch = x.size(0), in_channels = x.size(1), height = x.size(2),
                width = x.size(3);
  const int64_t out_h = (height + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1;
  const int64_t out_w = (width + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0, "sparse_conv2d: the input is smaller than the kernel");
  TORCH_CHECK(!pool || (out_h >= 2 && out_w >= 2), "sparse_conv2d: too small to pool");
  const bool mapped = bias_map.defined() && bias_map.numel();
  TORCH_CHECK(!mapped || bias_map.numel() == out_channels * out_h * out_w,
              "sparse_conv2d: the bias map is not one value per output value");
  const bool added = residual.defined() && residual.numel();
  TORCH_CHECK(!added || (residual.sizes() == torch::IntArrayRef{batch, out_channels, out_h, out_w}
                         && residual.scalar_type() == torch::kFloat),
              "sparse_conv2d: the residual is not a float32 tensor of the output's shape");
  auto shortcut = added ? residual.contiguous() : residual;

  const int64_t padded_h = height + 2 * pad_h, padded_w = width + 2 * pad_w;
  const int64_t plane = padded_h * padded_w;
  auto padded = padded_input(x, pad_h, pad_w);
  // Strided along the width, a row is computed at stride 1 and every stride_w-th value read
  // out (strided loads do not vectorize). At stride 1 down the height, the whole output is one
  // span; at a larger one, each output row is a span of its own, the rows between skipped.
  const int64_t full_w = (out_w - 1) * stride_w + 1;
  const bool one_span = stride_h == 1;
  const int64_t span_length = one_span ? (out_h - 1) * padded_w + full_w : full_w;
  const int64_t row_step = one_span ? padded_w : 0;  // a row's start in the span

  // a layer read from a file someone sent is held to its shapes before anything is indexed
  const int64_t live = values.numel();
  TORCH_CHECK(values.scalar_type() == torch::kFloat && values.is_contiguous() &&
                  starts.scalar_type() == torch::kLong && starts.is_contiguous() &&
                  starts.numel() == out_channels + 1,
              "sparse_conv2d: the layer's weights are not the shapes and types it writes");
  for (auto* index : {&channels, &rows, &cols})
    TORCH_CHECK(index->scalar_type() == torch::kInt && index->is_contiguous() &&
                    index->numel() == live,
                "sparse_conv2d: the layer's weight indices are not one per live weight");
  TORCH_CHECK(!bias.defined() || !bias.numel() ||
                  (bias.scalar_type() == torch::kFloat && bias.numel() == out_channels),
              "sparse_conv2d: the bias is not one float per output channel");
  TORCH_CHECK(!mapped || (bias_map.scalar_type() == torch::kFloat && bias_map.is_contiguous()),
              "sparse_conv2d: the bias map is not a contiguous float32 tensor");
  const auto* first_of = starts.data_ptr<int64_t>();
  TORCH_CHECK(first_of[0] == 0 && first_of[out_channels] == live,
              "sparse_conv2d: the channels' weights do not cover the live weights");
  for (int64_t o = 0; o < out_channels; ++o)
    TORCH_CHECK(first_of[o] <= first_of[o + 1], "sparse_conv2d: the channels' weights overlap");
  std::vector<int64_t> offsets(live);
  const auto* c = channels.data_ptr<int32_t>();
  const auto* r = rows.data_ptr<int32_t>();
  const auto* s = cols.data_ptr<int32_t>();
  for (int64_t k = 0; k < live; ++k) {
    TORCH_CHECK(c[k] >= 0 && c[k] < in_channels && r[k] >= 0 && r[k] < kernel_h && s[k] >= 0 &&
                    s[k] < kernel_w,
                "sparse_conv2d: a weight's index is outside the layer");
    offsets[k] = c[k] * plane + r[k] * dilation_h * padded_w + s[k] * dilation_w;
  }

  const int64_t final_h = pool ? out_h / 2 : out_h, final_w = pool ? out_w / 2 : out_w;
  auto out = torch::empty({batch, out_channels, final_h, final_w}, x.options());
  const auto* start = starts.data_ptr<int64_t>();
  const float* w = values.data_ptr<float>();
  const float* b = bias.defined() && bias.numel() ? bias.data_ptr<float>() : nullptr;
  const float* map = mapped ? bias_map.data_ptr<float>() : nullptr;
  const float* res = added ? shortcut.data_ptr<float>() : nullptr;
  const float* in = padded.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t* off = offsets.data();
  const int64_t in_image = in_channels * plane, out_image = out_channels * final_h * final_w;
  const int64_t out_plane = out_h * out_w;

  // one task per (image, output channel); small ones are grouped so a thread's share is worth
  // waking it for
  const int64_t work = std::max<int64_t>(1, live / std::max<int64_t>(out_channels, 1) * out_h);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(work, 1));
  at::parallel_for(0, batch * out_channels, grain, [&](int64_t first, int64_t last) {
    std::vector<float> values_of(rounded(one_span ? span_length : full_w));
    std::vector<float> upper(out_w), lower(out_w);
    for (int64_t task = first; task < last; ++task) {
      const int64_t n = task / out_channels, ch = task % out_channels;
      const int64_t k0 = start[ch], count = start[ch + 1] - k0;
      const float bias_value = b ? b[ch] : 0.0f;
      const float* image = in + n * in_image;
      const float* channel_map = map ? map + ch * out_plane : nullptr;
      const float* channel_res = res ? res + (n * out_channels + ch) * out_plane : nullptr;
      float* target = o + n * out_image + ch * final_h * final_w;
      float* computed = values_of.data();
      if (count && one_span)
        span(computed, image, span_length, off + k0, w + k0, count, bias_value);
      // output row y into `into` (out_w values), before the ReLU
      auto row = [&](int64_t y, float* into) {
        if (count == 0) {  // most channels of a layer at 99.9% sparsity: a constant
          std::fill(into, into + out_w, bias_value);
        } else {
          if (!one_span)
            span(computed, image + y * stride_h * padded_w, full_w, off + k0, w + k0, count,
                 bias_value);
          const float* line = computed + y * row_step;
          for (int64_t x = 0; x < out_w; ++x) into[x] = line[x * stride_w];
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
          row(2 * y, upper.data());
          row(2 * y + 1, lower.data());
          for (int64_t x = 0; x < final_w; ++x)
            written[x] = larger(larger(upper[2 * x], upper[2 * x + 1]),
                                larger(lower[2 * x], lower[2 * x + 1]));
        } else {
          row(y, written);
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
