// CPU kernels for LeNet-5's small layers, where oneDNN and ATen leave most of the machine
// idle: oneDNN vectorises a convolution over its channels, 16 at a time with AVX-512, so a
// layer with 6 output channels (LeNet-5's first; the second's input gradient) uses 6/16 of
// every vector; ATen's max pooling on contiguous (NCHW) planes is a scalar loop. These
// vectorise along image rows instead. Built by analysis/cpu_ops.py
// (torch.utils.cpp_extension) for the instruction set of the CPU it runs on.
//
// - conv5x5_forward: a 5x5 convolution, stride 1, no padding, of NCHW float32 images whose
//   output rows are 1 to 4 vectors long (LeNet-5's first layer: 28 outputs a row).
// - conv5x5_weight_grad: its weight and bias gradients, from channels_last images with up to
//   2 vectors of floats in a 5-pixel window row (LeNet-5's 3 and 6 channels with AVX-512).
//   Sums run in a fixed order, whatever the thread count.
// - max_pool2x2: 2x2 max pooling, stride 2, of NCHW float32 images, with the values and
//   indices at::max_pool2d_with_indices gives (so that ATen's backward applies).
// - augment_normalize: a training batch taken, cropped, flipped and normalised in one pass.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
constexpr int V = 16;  // floats per vector register
#else
constexpr int V = 8;
#endif
typedef float vec __attribute__((vector_size(V * sizeof(float))));
typedef int ivec __attribute__((vector_size(V * sizeof(int))));
constexpr int K = 5;  // kernel size

static inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof v); }

// a * b + c, rounded once. The file is built with -ffp-contract=off: the compiler fuses no
// multiply-add on its own, so every result's rounding is the one written here.
static inline vec fma(float a, vec b, vec c) {
#if defined(__AVX512F__)
  return (vec)_mm512_fmadd_ps(_mm512_set1_ps(a), (__m512)b, (__m512)c);
#else
  return (vec)_mm256_fmadd_ps(_mm256_set1_ps(a), (__m256)b, (__m256)c);
#endif
}

// A row of `ow` outputs as NV vectors; the last one ends at the row's end, so it overlaps
// the one before it when ow is not a multiple of V.
template <int NV>
static void row_offsets(int64_t ow, int64_t* off) {
  for (int v = 0; v < NV; ++v) off[v] = std::min<int64_t>(v * V, ow - V);
}

// R output rows from oy, output channels oc0 .. oc0 + OCB - 1, of one image.
template <int NV, int OCB, int R>
static void forward_tile(const float* in, const float* w, const float* bias, float* out,
                         int64_t c_in, int64_t h, int64_t wd, int64_t oc0, int64_t oy) {
  const int64_t oh = h - K + 1, ow = wd - K + 1;
  int64_t off[NV];
  row_offsets<NV>(ow, off);
  vec acc[R][OCB][NV];
  for (int o = 0; o < OCB; ++o)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][o][v] = vec{} + bias[oc0 + o];
  for (int64_t c = 0; c < c_in; ++c)
    for (int ky = 0; ky < K; ++ky) {
      const float* rows = in + (c * h + oy + ky) * wd;
      const float* wk = w + ((oc0 * c_in + c) * K + ky) * K;
      for (int kx = 0; kx < K; ++kx) {
        vec x[R][NV];
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < NV; ++v) x[r][v] = load(rows + r * wd + off[v] + kx);
        for (int o = 0; o < OCB; ++o) {
          const float wv = wk[o * c_in * K * K + kx];
          for (int r = 0; r < R; ++r)
            for (int v = 0; v < NV; ++v) acc[r][o][v] = fma(wv, x[r][v], acc[r][o][v]);
        }
      }
    }
  for (int o = 0; o < OCB; ++o)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v)
        store(out + ((oc0 + o) * oh + oy + r) * ow + off[v], acc[r][o][v]);
}

template <int NV, int OCB, int R>
static void forward_image(const float* in, const float* w, const float* bias, float* out,
                          int64_t c_in, int64_t c_out, int64_t h, int64_t wd) {
  const int64_t oh = h - K + 1;
  for (int64_t oc = 0; oc + OCB <= c_out; oc += OCB) {
    int64_t oy = 0;
    for (; oy + R <= oh; oy += R) forward_tile<NV, OCB, R>(in, w, bias, out, c_in, h, wd, oc, oy);
    for (; oy < oh; ++oy) forward_tile<NV, OCB, 1>(in, w, bias, out, c_in, h, wd, oc, oy);
  }
  for (int64_t oc = c_out / OCB * OCB; oc < c_out; ++oc)
    for (int64_t oy = 0; oy < oh; ++oy) forward_tile<NV, 1, 1>(in, w, bias, out, c_in, h, wd, oc, oy);
}

static int64_t vectors_per_row(const torch::Tensor& x) {
  const int64_t ow = x.size(3) - K + 1;
  return (ow + V - 1) / V;
}

// Which output rows this build can handle: 1 to 4 vectors long, at least one whole vector.
bool conv5x5_supports(int64_t width) {
  const int64_t ow = width - K + 1;
  return ow >= V && ow <= 4 * V;
}

static void check(const torch::Tensor& x, const torch::Tensor& w) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous(),
              "conv5x5: x must be contiguous NCHW float32");
  TORCH_CHECK(w.dim() == 4 && w.size(1) == x.size(1) && w.size(2) == K && w.size(3) == K &&
              w.is_contiguous() && w.scalar_type() == torch::kFloat, "conv5x5: bad weight");
  TORCH_CHECK(conv5x5_supports(x.size(3)) && x.size(2) >= K, "conv5x5: unsupported width");
}

static void check_bias(const torch::Tensor& bias, int64_t c_out) {
  TORCH_CHECK(bias.dim() == 1 && bias.numel() == c_out && bias.is_contiguous() &&
              bias.scalar_type() == torch::kFloat, "conv5x5: bias must be float32 (c_out,)");
}

torch::Tensor conv5x5_forward(torch::Tensor x, torch::Tensor w, torch::Tensor bias) {
  check(x, w);
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t c_out = w.size(0), oh = h - K + 1, ow = wd - K + 1;
  check_bias(bias, c_out);
  auto out = torch::empty({n, c_out, oh, ow}, x.options());
  const float *in = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *b = bias.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t nv = vectors_per_row(x);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* xi = in + i * c_in * h * wd;
      float* oi = o + i * c_out * oh * ow;
      // Register tiles of about 24 accumulators (of 32 registers with AVX-512, 16 without).
      if (V == 16 && nv == 2) forward_image<2, 6, 2>(xi, wp, b, oi, c_in, c_out, h, wd);
      else if (nv == 1) forward_image<1, 6, 2>(xi, wp, b, oi, c_in, c_out, h, wd);
      else if (nv == 2) forward_image<2, 3, 1>(xi, wp, b, oi, c_in, c_out, h, wd);
      else if (nv == 3) forward_image<3, 2, 1>(xi, wp, b, oi, c_in, c_out, h, wd);
      else forward_image<4, 2, 1>(xi, wp, b, oi, c_in, c_out, h, wd);
    }
  });
  return out;
}

// The weight gradient is a sum over output pixels of g[o][pixel] times the 5x5 input window
// at the pixel. In channels_last input one window row, 5 pixels of c_in channels, is 5 * c_in
// consecutive floats: with c_in = 3, 15 lanes of one AVX-512 vector. So the loop runs over
// pixels, a broadcast gradient times a window row per multiply-add, with accumulators laid
// out as the weights' (kx, c) lanes, for OCB output channels and the 5 rows of the window.
template <int NL, int OCB>
static void weight_grad_pixels(const float* in, const float* g, vec* acc, int64_t c_in,
                               int64_t wd, int64_t oh, int64_t ow, int64_t oc0) {
  vec a[OCB][K][NL] = {};
  for (int64_t oy = 0; oy < oh; ++oy)
    for (int64_t ox = 0; ox < ow; ++ox) {
      const int64_t p = oy * ow + ox;
      float gv[OCB];
      for (int o = 0; o < OCB; ++o) gv[o] = g[(oc0 + o) * oh * ow + p];
      for (int ky = 0; ky < K; ++ky) {
        const float* row = in + ((oy + ky) * wd + ox) * c_in;
        for (int l = 0; l < NL; ++l) {
          const vec x = load(row + l * V);
          for (int o = 0; o < OCB; ++o) a[o][ky][l] = fma(gv[o], x, a[o][ky][l]);
        }
      }
    }
  for (int o = 0; o < OCB; ++o)
    for (int ky = 0; ky < K; ++ky)
      for (int l = 0; l < NL; ++l) acc[((oc0 + o) * K + ky) * NL + l] += a[o][ky][l];
}

template <int NL, int OCB>
static void weight_grad_image(const float* in, const float* g, vec* acc, int64_t c_in,
                              int64_t c_out, int64_t wd, int64_t oh, int64_t ow) {
  int64_t oc = 0;
  for (; oc + OCB <= c_out; oc += OCB)
    weight_grad_pixels<NL, OCB>(in, g, acc, c_in, wd, oh, ow, oc);
  for (; oc < c_out; ++oc) weight_grad_pixels<NL, 1>(in, g, acc, c_in, wd, oh, ow, oc);
}

// Whether conv5x5_weight_grad handles c_in input channels: a window row in at most 2 vectors.
bool weight_grad_supports(int64_t c_in) { return K * c_in <= 2 * V; }

// (weight gradient, bias gradient) of a 5x5 convolution (stride 1, no padding) of
// channels_last float32 images x, given the gradient g of its NCHW output.
std::vector<torch::Tensor> conv5x5_weight_grad(torch::Tensor x, torch::Tensor g) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous(cl) &&
              weight_grad_supports(x.size(1)), "conv5x5_weight_grad: bad x");
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t oh = h - K + 1, ow = wd - K + 1, c_out = g.size(1);
  TORCH_CHECK(g.dim() == 4 && g.scalar_type() == torch::kFloat && g.is_contiguous() &&
              g.size(0) == n && g.size(2) == oh && g.size(3) == ow,
              "conv5x5_weight_grad: bad gradient");
  const int64_t nl = (K * c_in + V - 1) / V, per_chunk = c_out * K * nl + c_out;
  // Images in fixed chunks, each summed on its own, then the chunks in order: the same
  // sums whatever the number of threads.
  constexpr int64_t CHUNK = 8;
  const int64_t chunks = (n + CHUNK - 1) / CHUNK;
  std::vector<vec> part(chunks * per_chunk, vec{});
  const float *in = x.data_ptr<float>(), *gp = g.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> last;
    for (int64_t k = begin; k < end; ++k) {
      vec* acc = part.data() + k * per_chunk;
      for (int64_t i = k * CHUNK; i < std::min(n, (k + 1) * CHUNK); ++i) {
        const float* xi = in + i * h * wd * c_in;
        if (i == n - 1) {  // a window row's vectors read past its end: not past the tensor's
          last.assign(xi, xi + h * wd * c_in);
          last.resize(h * wd * c_in + 2 * V);
          xi = last.data();
        }
        const float* gi = gp + i * c_out * oh * ow;
        // Register tiles of up to 30 accumulators (of 32 registers with AVX-512, 16 without).
        if (nl == 1) weight_grad_image<1, V == 16 ? 6 : 3>(xi, gi, acc, c_in, c_out, wd, oh, ow);
        else if (V == 16) weight_grad_image<2, 2>(xi, gi, acc, c_in, c_out, wd, oh, ow);
        else weight_grad_image<2, 1>(xi, gi, acc, c_in, c_out, wd, oh, ow);
        vec* bias_acc = acc + c_out * K * nl;
        for (int64_t o = 0; o < c_out; ++o) {
          const float* go = gi + o * oh * ow;
          vec s{};
          int64_t p = 0;
          for (; p + V <= oh * ow; p += V) s += load(go + p);
          for (; p < oh * ow; ++p) s[0] += go[p];
          bias_acc[o] += s;
        }
      }
    }
  });
  auto dw = torch::empty({c_out, c_in, K, K}, x.options());
  auto db = torch::empty({c_out}, x.options());
  auto w_acc = dw.accessor<float, 4>();
  float* dbp = db.data_ptr<float>();
  for (int64_t j = 0; j < per_chunk; ++j) {
    vec s{};
    for (int64_t k = 0; k < chunks; ++k) s += part[k * per_chunk + j];
    if (j >= c_out * K * nl) {  // a bias: the sum of its lanes
      float t = 0;
      for (int l = 0; l < V; ++l) t += s[l];
      dbp[j - c_out * K * nl] = t;
      continue;
    }
    const int64_t o = j / (K * nl), ky = j / nl % K, l0 = j % nl * V;
    for (int l = 0; l < V; ++l)  // lane l0 + l is (kx, c) of the window row
      if (l0 + l < K * c_in) w_acc[o][(l0 + l) % c_in][ky][(l0 + l) / c_in] = s[l];
  }
  return {dw, db};
}

// 2x2 max pooling, stride 2, of NCHW float32 images: per window the first maximum row by
// row, its index h * W + w in its plane, as ATen's kernel gives them. A NaN anywhere leaves
// the batch to ATen, whose rule for NaNs this does not copy. In two vectorised passes over a
// block of output rows: each pair of neighbours in a row (a row's pairs lie next to each
// other in memory, since W is even), then each pair against the one below it.
typedef int64_t lvec __attribute__((vector_size(V * sizeof(int64_t))));

std::vector<torch::Tensor> max_pool2x2(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous() &&
              x.size(2) % 2 == 0 && x.size(3) % 2 == 0,
              "max_pool2x2: x must be contiguous NCHW float32 of even height and width");
  const int64_t rows = x.size(0) * x.size(1) * x.size(2) / 2, w = x.size(3), ow = w / 2;
  auto out = torch::empty({x.size(0), x.size(1), x.size(2) / 2, ow}, x.options());
  auto index = torch::empty_like(out, out.options().dtype(torch::kLong));
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  int64_t* ix = index.data_ptr<int64_t>();
  const int64_t plane_rows = x.size(2) / 2;
  ivec even_lanes, odd_lanes;
  lvec iota;
  for (int l = 0; l < V; ++l) even_lanes[l] = 2 * l, odd_lanes[l] = 2 * l + 1, iota[l] = l;
  std::atomic<bool> nan{false};
  constexpr int64_t BLOCK = 64;  // output rows per pass
  at::parallel_for(0, (rows + BLOCK - 1) / BLOCK, 1, [&](int64_t begin, int64_t end) {
    // Each pair's larger value (the right one only if larger) and whether it is the right.
    std::vector<float> pair(BLOCK * w + 2 * V);
    std::vector<int> right(BLOCK * w + 2 * V);
    ivec seen{};
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * BLOCK, r1 = std::min(rows, r0 + BLOCK);
      const int64_t pairs = (r1 - r0) * w;  // two input rows of w / 2 pairs per output row
      const float* src = in + r0 * 2 * w;
      int64_t u = 0;
      for (; u + V <= pairs; u += V) {
        const vec lo = load(src + 2 * u), hi = load(src + 2 * u + V);
        const vec a = __builtin_shuffle(lo, hi, even_lanes), b = __builtin_shuffle(lo, hi, odd_lanes);
        const ivec take_b = b > a;
        seen |= (a != a) | (b != b);
        store(pair.data() + u, take_b ? b : a);
        std::memcpy(right.data() + u, &take_b, sizeof take_b);
      }
      for (; u < pairs; ++u) {
        const float a = src[2 * u], b = src[2 * u + 1];
        seen[0] |= (a != a) | (b != b);
        pair[u] = b > a ? b : a;
        right[u] = b > a ? -1 : 0;
      }
      for (int64_t r = r0; r < r1; ++r) {
        const float* top = pair.data() + (r - r0) * w;  // then the bottom row's ow pairs
        const int* top_right = right.data() + (r - r0) * w;
        const int64_t first = 2 * (r % plane_rows) * w;  // index of the window row's start
        for (int64_t j = 0; j < ow; j += V) {
          const vec t = load(top + j), bt = load(top + ow + j);
          ivec tr, br;
          std::memcpy(&tr, top_right + j, sizeof tr);
          std::memcpy(&br, top_right + ow + j, sizeof br);
          const ivec lower = bt > t;  // on a tie the top row, which comes first, wins
          const vec m = lower ? bt : t;
          const lvec col = __builtin_convertvector(lower ? br : tr, lvec) * -1;
          const lvec below = __builtin_convertvector(lower, lvec) * -w;
          const lvec idx = first + 2 * (iota + j) + col + below;
          if (j + V <= ow) {
            store(o + r * ow + j, m);
            std::memcpy(ix + r * ow + j, &idx, sizeof idx);
          } else {
            for (int64_t l = 0; l < ow - j; ++l) o[r * ow + j + l] = m[l], ix[r * ow + j + l] = idx[l];
          }
        }
      }
    }
    bool any = false;
    for (int l = 0; l < V; ++l) any |= seen[l] != 0;
    if (any) nan = true;
  });
  if (nan) {
    auto both = at::max_pool2d_with_indices(x, {2, 2}, {2, 2});
    return {std::get<0>(both), std::get<1>(both)};
  }
  return {out, index};
}

// A training batch from uint8 channels_last images: image index[i], shifted by (top[i] - pad,
// left[i] - pad) with zeros outside it (a random crop of the zero-padded image), flipped
// left-right where flip[i] and upside down where vflip[i], then shift + pixel * scale per
// channel, as float32 NCHW. The same values as data.augment then data.normalize, to the bit:
// a fused multiply-add, rounded once, as PyTorch's addcmul computes it.
torch::Tensor augment_normalize(torch::Tensor images, torch::Tensor index, torch::Tensor top,
                                torch::Tensor left, torch::Tensor flip, torch::Tensor vflip,
                                int64_t pad, torch::Tensor scale, torch::Tensor shift) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == torch::kByte &&
              images.is_contiguous(cl), "augment_normalize: images must be channels_last uint8");
  const int64_t n = index.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  for (const auto& t : {index, top, left})
    TORCH_CHECK(t.scalar_type() == torch::kLong && t.is_contiguous() && t.numel() == n,
                "augment_normalize: index, top and left must be int64 of one length");
  for (const auto& t : {flip, vflip})
    TORCH_CHECK(t.scalar_type() == torch::kBool && t.numel() == n, "augment_normalize: bad flips");
  TORCH_CHECK(scale.numel() == c && shift.numel() == c && scale.scalar_type() == torch::kFloat &&
              shift.scalar_type() == torch::kFloat, "augment_normalize: bad scale or shift");
  auto out = torch::empty({n, c, h, w}, images.options().dtype(torch::kFloat));
  const uint8_t* src = images.data_ptr<uint8_t>();
  const int64_t *ix = index.data_ptr<int64_t>(), *tp = top.data_ptr<int64_t>(),
                *lf = left.data_ptr<int64_t>();
  const bool *fl = flip.data_ptr<bool>(), *vf = vflip.data_ptr<bool>();
  const float *sc = scale.data_ptr<float>(), *sh = shift.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t count = images.size(0);
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(ix[i] >= 0 && ix[i] < count, "augment_normalize: index out of range");
  // Per channel_last row position j (pixel j / c, channel j % c) its scale and shift, so
  // that a source row normalises in one vectorised loop.
  std::vector<float> row_scale(w * c), row_shift(w * c);
  for (int64_t j = 0; j < w * c; ++j) row_scale[j] = sc[j % c], row_shift[j] = sh[j % c];
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> row(w * c);
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* image = src + ix[i] * h * w * c;
      // Output pixel x reads source column sx = x0 + step * x, if it lies in the image.
      const int64_t step = fl[i] ? -1 : 1, x0 = fl[i] ? w - 1 - pad + lf[i] : lf[i] - pad;
      for (int64_t y = 0; y < h; ++y) {
        const int64_t sy = (vf[i] ? h - 1 - y : y) + tp[i] - pad;
        const bool inside_row = sy >= 0 && sy < h;
        if (inside_row) {
          const uint8_t* from = image + sy * w * c;
          for (int64_t j = 0; j < w * c; ++j) {
            row[j] = std::fma(static_cast<float>(from[j]), row_scale[j], row_shift[j]);
          }
        }
        // The output columns whose source column lies in the image: [first, last).
        int64_t first = 0, last = 0;
        if (inside_row) {
          first = std::clamp<int64_t>(step > 0 ? -x0 : x0 - w + 1, 0, w);
          last = std::clamp<int64_t>(step > 0 ? w - x0 : x0 + 1, first, w);
        }
        for (int64_t k = 0; k < c; ++k) {
          float* to = o + ((i * c + k) * h + y) * w;
          for (int64_t x = 0; x < first; ++x) to[x] = sh[k];
          const float* from = row.data() + x0 * c + k;
          if (step > 0)
            for (int64_t x = first; x < last; ++x) to[x] = from[x * c];
          else
            for (int64_t x = first; x < last; ++x) to[x] = from[-x * c];
          for (int64_t x = last; x < w; ++x) to[x] = sh[k];
        }
      }
    }
  });
  return out;
}

int64_t vector_width() { return V; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv5x5_supports", &conv5x5_supports);
  m.def("conv5x5_forward", &conv5x5_forward);
  m.def("conv5x5_weight_grad", &conv5x5_weight_grad);
  m.def("weight_grad_supports", &weight_grad_supports);
  m.def("max_pool2x2", &max_pool2x2);
  m.def("vector_width", &vector_width);
  m.def("augment_normalize", &augment_normalize);
}
