// Input normalisation on the device: u8 NHWC pixels -> f32 NHWC network input, f32.
//
// Formula (CPU reference: src/backend/cpu/input.rs, the same function the loader used on the host):
//   out[i] = (src[i] / 255 - mean[c]) / std[c],   c = i % 3 (NHWC, RGB innermost)
// evaluated in f32 in exactly that order with IEEE division (no fast-math; nothing here can be
// contracted into an FMA), so the result is bit-identical to the host formula: moving normalisation to
// the device changes no training number.
//
// Why. A batch of 64 images at 224 is 9.6 MB as u8 and 38.5 MB as f32: uploading the bytes and
// normalising here cuts the host-to-device copy 4x and takes the normalisation (one pass over 9.6 M
// values, ~10 ms of one host core) off the host's critical path (issue #13 item 4).
//
// Layout: src is a byte view of an f32 staging tensor (so it is 4-byte aligned), n bytes; out is n floats.
// Launch: 1-D grid-stride loop over groups of 4 values, 256 threads per block, grid = min(ceil(n / 4 /
// 256), 65535 * 4) (src/backend/ops/input.rs). Each thread reads one 4-byte word and, when out is
// 16-byte aligned (every arena tensor is), writes one 16-byte float4: full-width coalesced accesses in
// both directions, 20 bytes of traffic per 4 values. The last n % 4 values (or everything, if out is
// not 16-byte aligned) go through the scalar tail. Memory-bound: the goal is the copy bandwidth.

#include "common.cuh"

// One value of channel c (0, 1, 2).
__device__ __forceinline__ float normalize_u8_value(unsigned int v, int c, float m0, float m1, float m2, float s0,
                                                    float s1, float s2) {
    const float m = c == 0 ? m0 : (c == 1 ? m1 : m2);
    const float s = c == 0 ? s0 : (c == 1 ? s1 : s2);
    return ((float)v / 255.0f - m) / s;
}

extern "C" __global__ void normalize_u8_nhwc_f32(const unsigned char* __restrict__ src, float* __restrict__ out,
                                                 long long n, float m0, float m1, float m2, float s0, float s1,
                                                 float s2) {
    const bool vec = ((unsigned long long)out & 15) == 0;
    const long long groups = vec ? n / 4 : 0;
    const unsigned int* words = reinterpret_cast<const unsigned int*>(src);
    GRID_STRIDE_LOOP(g, groups) {
        const unsigned int w = words[g];
        // One 64-bit modulo per 4 values; the next channels follow by small integer steps.
        const int c0 = (int)((4 * g) % 3);
        const int c1 = c0 == 2 ? 0 : c0 + 1;
        const int c2 = c1 == 2 ? 0 : c1 + 1;
        float4 o;  // little-endian: byte 0 of the word is value 4g
        o.x = normalize_u8_value(w & 0xffu, c0, m0, m1, m2, s0, s1, s2);
        o.y = normalize_u8_value((w >> 8) & 0xffu, c1, m0, m1, m2, s0, s1, s2);
        o.z = normalize_u8_value((w >> 16) & 0xffu, c2, m0, m1, m2, s0, s1, s2);
        o.w = normalize_u8_value(w >> 24, c0, m0, m1, m2, s0, s1, s2);
        reinterpret_cast<float4*>(out)[g] = o;
    }
    GRID_STRIDE_LOOP(t, n - 4 * groups) {
        const long long i = 4 * groups + t;
        out[i] = normalize_u8_value(src[i], (int)(i % 3), m0, m1, m2, s0, s1, s2);
    }
}
