// Crop kernels of the box_embed backend, compiled at run time by NVRTC (see
// src/compile.rs). No headers are included, so that NVRTC alone, without a
// CUDA toolkit's include folder, compiles this file.
//
// roi_align_*: batched bilinear ROI-align (torchvision, aligned=True) from
//   UINT8 HWC RGB images packed in one buffer to CHW crops / 255, with the
//   exact semantics of docs/crop-semantics.md step 5 (crop_core::reference::roi_align).
// face_warp_f32: 2x3 inverse-affine bilinear warp to a square face crop,
//   normalised (x - 127.5) / 127.5.
//
// Every kernel checks each descriptor's image against the image buffer's
// length before reading (a failing crop is written as NaN, never as a
// plausible zero) and each store against the output length.

// Must match `CropDesc` in src/desc.rs byte for byte.
struct CropDesc {
    unsigned long long image_offset;  // byte offset of the image in the packed buffer
    unsigned int width;
    unsigned int height;
    float roi[4];   // x1, y1, x2, y2 in image pixels
    float mask[4];  // samples outside contribute 0, when has_mask != 0
    unsigned int has_mask;
    unsigned int reserved;
};
static_assert(sizeof(CropDesc) == 56, "CropDesc layout differs from the Rust side");

// Must match `FaceDesc` in src/desc.rs byte for byte.
struct FaceDesc {
    unsigned long long image_offset;
    unsigned int width;
    unsigned int height;
    // Inverse map, output pixel (u, v) -> source (x, y):
    // x = m[0]*u + m[1]*v + m[2], y = m[3]*u + m[4]*v + m[5].
    float inverse[6];
};
static_assert(sizeof(FaceDesc) == 40, "FaceDesc layout differs from the Rust side");

// True when the descriptor's whole image lies inside the image buffer; every
// pixel read below has 0 <= row < height and 0 <= col < width, so this one
// check bounds all of a crop's loads.
__device__ __forceinline__ bool image_fits(unsigned long long offset, unsigned int width,
                                           unsigned int height, unsigned long long images_len) {
    if (width == 0 || height == 0 || offset > images_len) {
        return false;
    }
    unsigned long long bytes = (unsigned long long)width * height * 3ull;
    return bytes <= images_len - offset;
}

__device__ __forceinline__ void store(float* out, unsigned long long i, float v) { out[i] = v; }

// Half output without cuda_fp16.h (see the header comment): round to nearest even.
__device__ __forceinline__ void store(unsigned short* out, unsigned long long i, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    out[i] = h;
}

// torchvision's bilinear_interpolate at pixel-index coordinates, all three
// channels; `img` points at the image's first byte.
__device__ __forceinline__ void bilinear_torchvision(const unsigned char* img, int width, int height,
                                                     float y, float x, float v[3]) {
    if (y < -1.0f || y > (float)height || x < -1.0f || x > (float)width) {
        v[0] = v[1] = v[2] = 0.0f;
        return;
    }
    y = fmaxf(y, 0.0f);
    x = fmaxf(x, 0.0f);
    int y_low = (int)floorf(y);
    int x_low = (int)floorf(x);
    int y_high, x_high;
    if (y_low >= height - 1) {
        y_low = y_high = height - 1;
        y = (float)y_low;
    } else {
        y_high = y_low + 1;
    }
    if (x_low >= width - 1) {
        x_low = x_high = width - 1;
        x = (float)x_low;
    } else {
        x_high = x_low + 1;
    }
    float ly = y - (float)y_low;
    float lx = x - (float)x_low;
    float hy = 1.0f - ly;
    float hx = 1.0f - lx;
    float w1 = hy * hx, w2 = hy * lx, w3 = ly * hx, w4 = ly * lx;
    const unsigned char* p1 = img + ((long long)y_low * width + x_low) * 3;
    const unsigned char* p2 = img + ((long long)y_low * width + x_high) * 3;
    const unsigned char* p3 = img + ((long long)y_high * width + x_low) * 3;
    const unsigned char* p4 = img + ((long long)y_high * width + x_high) * 3;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        v[c] = w1 * (float)p1[c] + w2 * (float)p2[c] + w3 * (float)p3[c] + w4 * (float)p4[c];
    }
}

// Launch layout shared by the kernels: x covers the pixels of one output
// plane (the host keeps size * size below 2^32), y strides over the crops, so
// a block reads one descriptor and the index math stays 32-bit (64-bit
// division costs tens of instructions per thread).
__device__ __forceinline__ bool plane_pixel(unsigned int size, unsigned int* row, unsigned int* col) {
    const unsigned int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= size * size) {
        return false;
    }
    *row = p / size;
    *col = p - *row * size;
    return true;
}

// One thread per output pixel (all three channels) of each crop.
template <typename Out>
__device__ void roi_align(const unsigned char* __restrict__ images, unsigned long long images_len,
                          const CropDesc* __restrict__ descs, unsigned int num_crops,
                          unsigned int crop_size, unsigned int sampling_ratio, Out* __restrict__ out,
                          unsigned long long out_len) {
    unsigned int oy, ox;
    if (!plane_pixel(crop_size, &oy, &ox)) {
        return;
    }
    const unsigned long long plane = (unsigned long long)crop_size * crop_size;
    for (unsigned long long n = blockIdx.y; n < num_crops; n += gridDim.y) {
        const CropDesc d = descs[n];
        float sum[3] = {0.0f, 0.0f, 0.0f};
        if (image_fits(d.image_offset, d.width, d.height, images_len)) {
            const unsigned char* img = images + d.image_offset;
            // The sample positions and the mask test use explicitly rounded
            // operations (never contracted into FMAs) in the reference's
            // order, so that they are bit-identical to the CPU path: a sample
            // on the -1 / W limits or on a mask edge must fall on the same side.
            const float fs = (float)sampling_ratio;
            const float bin_w = __fdiv_rn(__fsub_rn(d.roi[2], d.roi[0]), (float)crop_size);
            const float bin_h = __fdiv_rn(__fsub_rn(d.roi[3], d.roi[1]), (float)crop_size);
            const float base_x = __fadd_rn(__fsub_rn(d.roi[0], 0.5f), __fmul_rn((float)ox, bin_w));
            const float base_y = __fadd_rn(__fsub_rn(d.roi[1], 0.5f), __fmul_rn((float)oy, bin_h));
            for (unsigned int iy = 0; iy < sampling_ratio; ++iy) {
                const float y = __fadd_rn(base_y, __fdiv_rn(__fmul_rn((float)iy + 0.5f, bin_h), fs));
                for (unsigned int ix = 0; ix < sampling_ratio; ++ix) {
                    const float x = __fadd_rn(base_x, __fdiv_rn(__fmul_rn((float)ix + 0.5f, bin_w), fs));
                    if (d.has_mask) {
                        const float cx = __fadd_rn(x, 0.5f);
                        const float cy = __fadd_rn(y, 0.5f);
                        if (!(d.mask[0] <= cx && cx <= d.mask[2] && d.mask[1] <= cy && cy <= d.mask[3])) {
                            continue;
                        }
                    }
                    float v[3];
                    bilinear_torchvision(img, (int)d.width, (int)d.height, y, x, v);
                    sum[0] += v[0];
                    sum[1] += v[1];
                    sum[2] += v[2];
                }
            }
            const float count = (float)(sampling_ratio * sampling_ratio);
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                sum[c] = sum[c] / count / 255.0f;
            }
        } else {
            sum[0] = sum[1] = sum[2] = __int_as_float(0x7fc00000);  // NaN: a bad descriptor is visible
        }
        const unsigned long long base = n * 3ull * plane + (unsigned long long)oy * crop_size + ox;
#pragma unroll
        for (int c = 0; c < 3; ++c) {
            const unsigned long long o = base + (unsigned long long)c * plane;
            if (o < out_len) {
                store(out, o, sum[c]);
            }
        }
    }
}

extern "C" __global__ void roi_align_f32(const unsigned char* __restrict__ images,
                                         unsigned long long images_len,
                                         const CropDesc* __restrict__ descs, unsigned int num_crops,
                                         unsigned int crop_size, unsigned int sampling_ratio,
                                         float* __restrict__ out, unsigned long long out_len) {
    roi_align<float>(images, images_len, descs, num_crops, crop_size, sampling_ratio, out, out_len);
}

extern "C" __global__ void roi_align_f16(const unsigned char* __restrict__ images,
                                         unsigned long long images_len,
                                         const CropDesc* __restrict__ descs, unsigned int num_crops,
                                         unsigned int crop_size, unsigned int sampling_ratio,
                                         unsigned short* __restrict__ out,
                                         unsigned long long out_len) {
    roi_align<unsigned short>(images, images_len, descs, num_crops, crop_size, sampling_ratio, out,
                              out_len);
}

// Face warp: one thread per output pixel of each face. Bilinear with a constant zero border per
// neighbour (as cv2.warpAffine with BORDER_CONSTANT 0): a neighbour pixel
// outside the image reads 0, then (v - 127.5) / 127.5 makes it -1.
extern "C" __global__ void face_warp_f32(const unsigned char* __restrict__ images,
                                         unsigned long long images_len,
                                         const FaceDesc* __restrict__ descs, unsigned int num_faces,
                                         unsigned int out_size, float* __restrict__ out,
                                         unsigned long long out_len) {
    unsigned int v_out, u_out;
    if (!plane_pixel(out_size, &v_out, &u_out)) {
        return;
    }
    const unsigned long long plane = (unsigned long long)out_size * out_size;
    for (unsigned long long n = blockIdx.y; n < num_faces; n += gridDim.y) {
        const FaceDesc d = descs[n];
        float val[3];
        if (image_fits(d.image_offset, d.width, d.height, images_len)) {
            const unsigned char* img = images + d.image_offset;
            const int width = (int)d.width;
            const int height = (int)d.height;
            const float* m = d.inverse;
            const float u = (float)u_out;
            const float v = (float)v_out;
            // Same rounding as the host reference (no FMA contraction), see roi_align.
            const float x = __fadd_rn(__fadd_rn(__fmul_rn(m[0], u), __fmul_rn(m[1], v)), m[2]);
            const float y = __fadd_rn(__fadd_rn(__fmul_rn(m[3], u), __fmul_rn(m[4], v)), m[5]);
            float acc[3] = {0.0f, 0.0f, 0.0f};
            // Outside (-1, W) x (-1, H) every neighbour is outside; NaN fails this too.
            if (x > -1.0f && x < (float)width && y > -1.0f && y < (float)height) {
                const float fx0 = floorf(x);
                const float fy0 = floorf(y);
                const int x0 = (int)fx0;
                const int y0 = (int)fy0;
                const float lx = x - fx0;
                const float ly = y - fy0;
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const int yy = y0 + (k >> 1);
                    const int xx = x0 + (k & 1);
                    if (yy < 0 || yy >= height || xx < 0 || xx >= width) {
                        continue;
                    }
                    const float w = ((k >> 1) ? ly : 1.0f - ly) * ((k & 1) ? lx : 1.0f - lx);
                    const unsigned char* p = img + ((long long)yy * width + xx) * 3;
                    acc[0] += w * (float)p[0];
                    acc[1] += w * (float)p[1];
                    acc[2] += w * (float)p[2];
                }
            }
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                val[c] = (acc[c] - 127.5f) / 127.5f;
            }
        } else {
            val[0] = val[1] = val[2] = __int_as_float(0x7fc00000);
        }
        const unsigned long long base = n * 3ull * plane + (unsigned long long)v_out * out_size + u_out;
#pragma unroll
        for (int c = 0; c < 3; ++c) {
            const unsigned long long o = base + (unsigned long long)c * plane;
            if (o < out_len) {
                out[o] = val[c];
            }
        }
    }
}
