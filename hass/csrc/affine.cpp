// Matrix products with weights stored as small integer codes and an exact affine map per block (hass.affine).
//
// A weight row of K values is cut into blocks of 32; inside a block every value equals
// fma(scale, code, offset) exactly, for codes of 4 bits (0..15) or 8 bits (0..255): the structure a Q4_0, Q4_1,
// Q4_K or Q8_0 GGUF leaves once dequantized to fp32. The product decodes those fp32 weights on the fly, so it
// multiplies the very same fp32 values as a dense product, reading 4-6x fewer bytes; only its summation order is
// its own. That order is fixed per output: L lanes over k, then the lanes in a fixed order, however many rows the
// call has and however they are tiled, so a row's result never depends on the other rows. Two builds of the same
// loops live here: AVX2 + FMA (L = 8, every x86-64 CPU of the last decade; the default) and AVX-512 (L = 16, where
// the CPU has AVX-512 F / BW / DQ / VL and HASS_AFFINE_ISA=avx512 asks for it: on a 2-core EPYC with AVX-512 it made
// a one-token SmolLM2 step 10% faster and an 8-token forward, a tree verification, 7% slower, so speculative
// decoding is faster on AVX2); the lane count is fixed for a process (isa()), so is the order.
//
// Layout, per output feature n: codes uint8 [N, K/2] (4 bits: byte j holds the codes of k = 2j in its low
// nibble and k = 2j + 1 in its high one) or [N, K] (8 bits: one byte each); scale and offset fp32 [N, K/32].
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kTile = 3;  // output features decoded together into a thread's buffer (L1-resident)

// A block of 32 codes -> 32 fp32 weights fma(scale, code, offset), in four registers of 8.
template <int BITS>
inline void decode_block(const uint8_t* codes, __m256 s, __m256 o, __m256 w[4]) {
  __m128i lo8, hi8;
  if constexpr (BITS == 4) {
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
    const __m128i lo = _mm_and_si128(raw, nibble), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), nibble);
    lo8 = _mm_unpacklo_epi8(lo, hi);
    hi8 = _mm_unpackhi_epi8(lo, hi);
  } else {
    lo8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
    hi8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16));
  }
  w[0] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo8)), o);
  w[1] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo8, 8))), o);
  w[2] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi8)), o);
  w[3] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi8, 8))), o);
}

template <int BITS>
void decode_row(const uint8_t* codes, const float* scale, const float* offset, int64_t K, float* out) {
  for (int64_t b = 0; b < K / kBlock; ++b) {
    __m256 w[4];
    decode_block<BITS>(codes + b * (kBlock * BITS / 8), _mm256_set1_ps(scale[b]), _mm256_set1_ps(offset[b]), w);
    for (int g = 0; g < 4; ++g) _mm256_storeu_ps(out + b * kBlock + g * 8, w[g]);
  }
}

inline float hsum(__m256 v) {  // fixed order: lanes (i, i + 4), then (0, 2) + (1, 3)
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// out[i, j] for MR rows of x and NR decoded weight rows; every accumulator runs over k in the same order.
template <int MR, int NR>
inline void micro(const float* x, int64_t K, const float* w, float* out, int64_t N, const float* bias) {
  __m256 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) {
    __m256 wv[NR];
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j) wv[j] = _mm256_loadu_ps(w + j * K + k);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * K + k);
#pragma GCC unroll 3
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i * N + j] = hsum(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

template <int NR>
inline void all_rows(const float* x, int64_t M, int64_t K, const float* w, float* out, int64_t N,
                     const float* bias) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) micro<4, NR>(x + m * K, K, w, out + m * N, N, bias);
  switch (M - m) {
    case 3: micro<3, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    case 2: micro<2, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    case 1: micro<1, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    default: break;
  }
}

// For a few rows: decode each group of 8 weights into a register and multiply it with every row at once (no
// buffer). Each output still sums over k in steps of 8 lanes, then hsum: the same order as micro().
template <int BITS, int MR, int NR>
inline void fused(const float* x, int64_t K, const uint8_t* codes, const float* scale, const float* offset,
                  float* out, int64_t N, const float* bias) {
  const int64_t row_bytes = K * BITS / 8, blocks = K / kBlock;
  __m256 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      __m256 w[4];
      decode_block<BITS>(codes + j * row_bytes + b * (kBlock * BITS / 8), _mm256_set1_ps(scale[j * blocks + b]),
                         _mm256_set1_ps(offset[j * blocks + b]), w);
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g)
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i)
          acc[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * K + b * kBlock + g * 8), w[g], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i * N + j] = hsum(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

template <int BITS, int MR, int NR>
void fused_all(const float* x, int64_t K, const uint8_t* c, const float* s, const float* o, float* out, int64_t N,
               const float* bias) {
  const int64_t row_bytes = K * BITS / 8, blocks = K / kBlock;
  const int64_t groups = (N + NR - 1) / NR;
  at::parallel_for(0, groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t n = g * NR;
      const float* bn = bias ? bias + n : nullptr;
      if (n + NR <= N) {
        fused<BITS, MR, NR>(x, K, c + n * row_bytes, s + n * blocks, o + n * blocks, out + n, N, bn);
      } else {
        for (int64_t r = n; r < N; ++r)
          fused<BITS, MR, 1>(x, K, c + r * row_bytes, s + r * blocks, o + r * blocks, out + r, N,
                             bias ? bias + r : nullptr);
      }
    }
  });
}


// The same kernels on 16 lanes (AVX-512): one register holds half a block, so a block decodes in two fmas and the
// tile's micro-kernel has 32 registers for 6 x 4 accumulators. Compiled for AVX-512 here and called only where
// the CPU has it (isa()).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")
namespace avx512 {

constexpr int64_t kTile = 4;

template <int BITS>
inline void decode_block(const uint8_t* codes, __m512 s, __m512 o, __m512 w[2]) {
  __m128i lo8, hi8;  // the codes of k = 0..15 and 16..31, one byte each
  if constexpr (BITS == 4) {
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
    const __m128i lo = _mm_and_si128(raw, nibble), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), nibble);
    lo8 = _mm_unpacklo_epi8(lo, hi);
    hi8 = _mm_unpackhi_epi8(lo, hi);
  } else {
    lo8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
    hi8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16));
  }
  w[0] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo8)), o);
  w[1] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi8)), o);
}

template <int BITS>
void decode_row(const uint8_t* codes, const float* scale, const float* offset, int64_t K, float* out) {
  for (int64_t b = 0; b < K / kBlock; ++b) {
    __m512 w[2];
    decode_block<BITS>(codes + b * (kBlock * BITS / 8), _mm512_set1_ps(scale[b]), _mm512_set1_ps(offset[b]), w);
    _mm512_storeu_ps(out + b * kBlock, w[0]);
    _mm512_storeu_ps(out + b * kBlock + 16, w[1]);
  }
}

inline float hsum(__m512 v) {  // fixed order: lanes (i, i + 8), then as the 8-lane sum
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

template <int MR, int NR>
inline void micro(const float* x, int64_t K, const float* w, float* out, int64_t N, const float* bias) {
  __m512 acc[MR][NR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    __m512 wv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_loadu_ps(w + j * K + k);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * K + k);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i * N + j] = hsum(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

template <int NR>
inline void all_rows(const float* x, int64_t M, int64_t K, const float* w, float* out, int64_t N,
                     const float* bias) {
  int64_t m = 0;
  for (; m + 6 <= M; m += 6) micro<6, NR>(x + m * K, K, w, out + m * N, N, bias);
  switch (M - m) {
    case 5: micro<5, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    case 4: micro<4, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    case 3: micro<3, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    case 2: micro<2, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    case 1: micro<1, NR>(x + m * K, K, w, out + m * N, N, bias); break;
    default: break;
  }
}

template <int BITS, int MR, int NR>
inline void fused(const float* x, int64_t K, const uint8_t* codes, const float* scale, const float* offset,
                  float* out, int64_t N, const float* bias) {
  const int64_t row_bytes = K * BITS / 8, blocks = K / kBlock;
  __m512 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      __m512 w[2];
      decode_block<BITS>(codes + j * row_bytes + b * (kBlock * BITS / 8), _mm512_set1_ps(scale[j * blocks + b]),
                         _mm512_set1_ps(offset[j * blocks + b]), w);
#pragma GCC unroll 2
      for (int g = 0; g < 2; ++g)
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i)
          acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i * K + b * kBlock + g * 16), w[g], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i * N + j] = hsum(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

template <int BITS, int MR, int NR>
void fused_all(const float* x, int64_t K, const uint8_t* c, const float* s, const float* o, float* out, int64_t N,
               const float* bias) {
  const int64_t row_bytes = K * BITS / 8, blocks = K / kBlock;
  const int64_t groups = (N + NR - 1) / NR;
  at::parallel_for(0, groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t n = g * NR;
      const float* bn = bias ? bias + n : nullptr;
      if (n + NR <= N) {
        fused<BITS, MR, NR>(x, K, c + n * row_bytes, s + n * blocks, o + n * blocks, out + n, N, bn);
      } else {
        for (int64_t r = n; r < N; ++r)
          fused<BITS, MR, 1>(x, K, c + r * row_bytes, s + r * blocks, o + r * blocks, out + r, N,
                             bias ? bias + r : nullptr);
      }
    }
  });
}

template <int BITS>
void product(const float* x, int64_t M, const uint8_t* c, const float* s, const float* o, int64_t N, int64_t K,
             const float* bias, float* out) {
  const int64_t row_bytes = K * BITS / 8, tiles = (N + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 8, [&](int64_t t0, int64_t t1) {
    std::vector<float> buf(kTile * K);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * kTile, nr = std::min(kTile, N - n0);
      for (int64_t j = 0; j < nr; ++j)
        decode_row<BITS>(c + (n0 + j) * row_bytes, s + (n0 + j) * (K / kBlock), o + (n0 + j) * (K / kBlock), K,
                         buf.data() + j * K);
      const float* bj = bias ? bias + n0 : nullptr;
      switch (nr) {
        case 4: all_rows<4>(x, M, K, buf.data(), out + n0, N, bj); break;
        case 3: all_rows<3>(x, M, K, buf.data(), out + n0, N, bj); break;
        case 2: all_rows<2>(x, M, K, buf.data(), out + n0, N, bj); break;
        default: all_rows<1>(x, M, K, buf.data(), out + n0, N, bj);
      }
    }
  });
}

template <int BITS>
void linear(const float* x, int64_t M, const uint8_t* c, const float* s, const float* o, int64_t N, int64_t K,
            const float* b, float* out) {
  switch (M) {  // up to 3 rows in registers, more through the L1 tile (as the AVX2 path)
    case 1: fused_all<BITS, 1, 4>(x, K, c, s, o, out, N, b); break;
    case 2: fused_all<BITS, 2, 4>(x, K, c, s, o, out, N, b); break;
    case 3: fused_all<BITS, 3, 4>(x, K, c, s, o, out, N, b); break;
    default: product<BITS>(x, M, c, s, o, N, K, b, out);
  }
}

template <int BITS>
void decode_all(const uint8_t* c, const float* s, const float* o, int64_t N, int64_t K, float* dst) {
  const int64_t row_bytes = K * BITS / 8;
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      decode_row<BITS>(c + n * row_bytes, s + n * (K / kBlock), o + n * (K / kBlock), K, dst + n * K);
  });
}

}  // namespace avx512
#pragma GCC pop_options

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

// The lane count of this process: AVX2, or AVX-512 where HASS_AFFINE_ISA=avx512 asks for it and the CPU has it
// (or isa("avx512")).
int& lanes() {
  static int value = [] {
    const char* want = std::getenv("HASS_AFFINE_ISA");
    return want && std::strcmp(want, "avx512") == 0 && cpu_has_avx512() ? 16 : 8;
  }();
  return value;
}

// isa(""): the instruction set in use ("avx512" or "avx2"); isa("avx2" / "avx512"): switch (tests and benchmarks
// only: a switch changes the summation order, so never between two forwards whose results must agree).
std::string isa(c10::string_view want) {
  if (want == "avx2") {
    lanes() = 8;
  } else if (want == "avx512") {
    TORCH_CHECK(cpu_has_avx512(), "isa('avx512'): this CPU lacks AVX-512 F / BW / DQ / VL");
    lanes() = 16;
  } else {
    TORCH_CHECK(want.empty(), "isa(): 'avx2', 'avx512' or '' (query), not '", std::string(want), "'");
  }
  return lanes() == 16 ? "avx512" : "avx2";
}

int check(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& offset) {
  TORCH_CHECK(codes.device().is_cpu() && codes.dtype() == at::kByte && codes.dim() == 2 && codes.is_contiguous(),
              "codes: contiguous uint8 [N, K/2] or [N, K] on the CPU");
  TORCH_CHECK(scale.dtype() == at::kFloat && offset.dtype() == at::kFloat && scale.dim() == 2 &&
              scale.is_contiguous() && offset.is_contiguous() && scale.sizes() == offset.sizes(),
              "scale / offset: contiguous fp32 [N, K/32]");
  const int64_t K = scale.size(1) * kBlock;
  TORCH_CHECK(scale.size(0) == codes.size(0) && (codes.size(1) * 2 == K || codes.size(1) == K),
              "codes [", codes.size(0), ", ", codes.size(1), "] do not fit scale [", scale.size(0), ", ",
              scale.size(1), "]");
  return codes.size(1) == K ? 8 : 4;
}

template <int BITS>
void decode_all(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& offset, at::Tensor& out) {
  const int64_t N = scale.size(0), K = scale.size(1) * kBlock, row_bytes = K * BITS / 8;
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float *s = scale.data_ptr<float>(), *o = offset.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      decode_row<BITS>(c + n * row_bytes, s + n * (K / kBlock), o + n * (K / kBlock), K, dst + n * K);
  });
}

at::Tensor decode(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& offset) {
  const int bits = check(codes, scale, offset);
  at::Tensor out = at::empty({scale.size(0), scale.size(1) * kBlock}, scale.options());
  if (lanes() == 16) {
    const int64_t N = scale.size(0), K = scale.size(1) * kBlock;
    const uint8_t* c = codes.data_ptr<uint8_t>();
    const float *s = scale.data_ptr<float>(), *o = offset.data_ptr<float>();
    if (bits == 4) avx512::decode_all<4>(c, s, o, N, K, out.data_ptr<float>());
    else avx512::decode_all<8>(c, s, o, N, K, out.data_ptr<float>());
  } else if (bits == 4) {
    decode_all<4>(codes, scale, offset, out);
  } else {
    decode_all<8>(codes, scale, offset, out);
  }
  return out;
}

template <int BITS>
void product(const float* x, int64_t M, const at::Tensor& codes, const at::Tensor& scale,
             const at::Tensor& offset, const float* bias, float* out) {
  const int64_t N = scale.size(0), K = scale.size(1) * kBlock, row_bytes = K * BITS / 8;
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float *s = scale.data_ptr<float>(), *o = offset.data_ptr<float>();
  const int64_t tiles = (N + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 8, [&](int64_t t0, int64_t t1) {
    std::vector<float> buf(kTile * K);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * kTile, nr = std::min(kTile, N - n0);
      for (int64_t j = 0; j < nr; ++j)
        decode_row<BITS>(c + (n0 + j) * row_bytes, s + (n0 + j) * (K / kBlock), o + (n0 + j) * (K / kBlock), K,
                         buf.data() + j * K);
      const float* bj = bias ? bias + n0 : nullptr;
      if (nr == 3) all_rows<3>(x, M, K, buf.data(), out + n0, N, bj);
      else if (nr == 2) all_rows<2>(x, M, K, buf.data(), out + n0, N, bj);
      else all_rows<1>(x, M, K, buf.data(), out + n0, N, bj);
    }
  });
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& codes, const at::Tensor& scale,
                  const at::Tensor& offset, const std::optional<at::Tensor>& bias) {
  const int bits = check(codes, scale, offset);
  const int64_t N = scale.size(0), K = scale.size(1) * kBlock;
  TORCH_CHECK(input.device().is_cpu() && input.dtype() == at::kFloat && input.dim() >= 1 && input.size(-1) == K,
              "input: fp32 [..., ", K, "] on the CPU");
  const at::Tensor x = input.reshape({-1, K}).contiguous();
  const float* b = nullptr;
  at::Tensor bias_c;
  if (bias.has_value() && bias->defined()) {
    bias_c = bias->contiguous();
    TORCH_CHECK(bias_c.dtype() == at::kFloat && bias_c.numel() == N, "bias: fp32 [", N, "]");
    b = bias_c.data_ptr<float>();
  }
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = N;
  at::Tensor out = at::empty({x.size(0), N}, x.options());
  const int64_t M = x.size(0);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float *s = scale.data_ptr<float>(), *o = offset.data_ptr<float>();
  if (M == 0) return out.reshape(shape);
  if (lanes() == 16) {
    if (bits == 4) avx512::linear<4>(xp, M, c, s, o, N, K, b, op); else avx512::linear<8>(xp, M, c, s, o, N, K, b, op);
    return out.reshape(shape);
  }
  // up to 3 rows: decode into registers (a one-token step); more: decode a tile once into L1, then reuse it for
  // every row (4 rows measured faster that way on a 2-core AVX2 EPYC)
  if (bits == 4) {
    switch (M) {
      case 1: fused_all<4, 1, 4>(xp, K, c, s, o, op, N, b); break;
      case 2: fused_all<4, 2, 4>(xp, K, c, s, o, op, N, b); break;
      case 3: fused_all<4, 3, 2>(xp, K, c, s, o, op, N, b); break;
      default: product<4>(xp, M, codes, scale, offset, b, op);
    }
  } else {
    switch (M) {
      case 1: fused_all<8, 1, 4>(xp, K, c, s, o, op, N, b); break;
      case 2: fused_all<8, 2, 4>(xp, K, c, s, o, op, N, b); break;
      case 3: fused_all<8, 3, 2>(xp, K, c, s, o, op, N, b); break;
      default: product<8>(xp, M, codes, scale, offset, b, op);
    }
  }
  return out.reshape(shape);
}

}  // namespace

TORCH_LIBRARY(hass_affine, m) {
  m.def("decode(Tensor codes, Tensor scale, Tensor offset) -> Tensor");
  m.def("linear(Tensor input, Tensor codes, Tensor scale, Tensor offset, Tensor? bias) -> Tensor");
  m.def("isa(str want) -> str", isa);
}

TORCH_LIBRARY_IMPL(hass_affine, CPU, m) {
  m.impl("decode", decode);
  m.impl("linear", linear);
}
