// tinyflux's own CUDA kernels: im2col, col2im, max-pool forward and backward, a GEMM for CUDA-graph
// capture, and Adam. tinyflux/backends/cuda_ops.py compiles this file with the Geometry struct and the
// constants THREADS and GEMM_TILE put in front of it (CudaOps.source()), and launches the kernels.
// Each index-heavy kernel is a grid-stride loop with one thread per *output* element, so no two
// threads write the same place and no atomics are needed. The same text compiles as HIP for AMD GPUs
// and as plain C++ for the CPU emulation in the tests.

// One thread per output element, in a grid-stride loop: thread t handles elements t, t + T, t + 2T, ...
// for T threads in all; I is the integer type of the index.
#define GRID_STRIDE_LOOP(I, i, total) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (I)blockDim.x * gridDim.x)

// Index arithmetic: each of the four kernels below splits every flat index into coordinates with
// about eight divisions, and a 64-bit division costs the GPU several times the instructions of a
// 32-bit one. So each kernel's body is a template on the index type I, and the kernel runs it with
// 32-bit ints when g says every index fits (NARROW = 1, as for MNIST), else with 64-bit ones (a
// large video batch's columns can pass 2**31 elements).

// Splits a flat index into its three innermost coordinates (d, h, w) for sizes (D, H, W); returns the
// rest of the index, the coordinates outside those three.
template <typename I>
__device__ inline I split3(I i, I D, I H, I W, I* d, I* h, I* w) {
    *w = i % W; i /= W;
    *h = i % H; i /= H;
    *d = i % D;
    return i / D;
}

// col (C, KD, KH, KW, N, OD, OH, OW), contiguous: the value kernel offset (kd, kh, kw) sees at
// output (od, oh, ow) of image n, channel c; 0 where that falls in the padding.
template <typename T, typename I>
__device__ void im2col_body(const T* x, T* col, const Geometry<I> q) {
    const I total = q.C * q.KD * q.KH * q.KW * q.N * q.OD * q.OH * q.OW;
    GRID_STRIDE_LOOP(I, i, total) {
        I od, oh, ow, kd, kh, kw;
        const I r = split3(i, q.OD, q.OH, q.OW, &od, &oh, &ow);  // r = (c, kd, kh, kw) * N + n
        const I n = r % q.N;
        const I c = split3(r / q.N, q.KD, q.KH, q.KW, &kd, &kh, &kw);
        const I d = od * q.SD - q.PD + kd, h = oh * q.SH - q.PH + kh, w = ow * q.SW - q.PW + kw;
        const bool inside = d >= 0 && d < q.D && h >= 0 && h < q.H && w >= 0 && w < q.W;
        col[i] = inside ? x[n * q.XN + c * q.XC + d * q.XD + h * q.XH + w * q.XW] : T(0);
    }
}

template <typename T>
__global__ void im2col(const T* x, T* col, const long long* g) {
    if (G_NARROW) im2col_body<T, int>(x, col, Geometry<int>(g));
    else im2col_body<T, long long>(x, col, Geometry<long long>(g));
}

// The adjoint of im2col. gx (C, N, D, H, W), contiguous: each input element adds up the column
// entries that were copied from it, one per kernel offset that reached it, in increasing offset order.
template <typename T, typename I>
__device__ void col2im_body(const T* col, T* gx, const Geometry<I> q) {
    const I total = q.C * q.N * q.D * q.H * q.W;
    const I positions = q.N * q.OD * q.OH * q.OW;  // columns per kernel offset
    GRID_STRIDE_LOOP(I, i, total) {
        I d, h, w;
        const I r = split3(i, q.D, q.H, q.W, &d, &h, &w);  // r = c * N + n
        const I n = r % q.N;
        const I c = r / q.N;
        T sum = T(0);
        for (I kd = 0; kd < q.KD; ++kd) {
            const I td = d + q.PD - kd;  // = od * SD for the output that reads d through kd
            if (td < 0 || td % q.SD != 0 || td / q.SD >= q.OD) continue;
            for (I kh = 0; kh < q.KH; ++kh) {
                const I th = h + q.PH - kh;
                if (th < 0 || th % q.SH != 0 || th / q.SH >= q.OH) continue;
                for (I kw = 0; kw < q.KW; ++kw) {
                    const I tw = w + q.PW - kw;
                    if (tw < 0 || tw % q.SW != 0 || tw / q.SW >= q.OW) continue;
                    const I offset = (c * q.KD + kd) * q.KH * q.KW + kh * q.KW + kw;
                    const I output = ((n * q.OD + td / q.SD) * q.OH + th / q.SH) * q.OW + tw / q.SW;
                    sum += col[offset * positions + output];
                }
            }
        }
        gx[i] = sum;
    }
}

template <typename T>
__global__ void col2im(const T* col, T* gx, const long long* g) {
    if (G_NARROW) col2im_body<T, int>(col, gx, Geometry<int>(g));
    else col2im_body<T, long long>(col, gx, Geometry<long long>(g));
}

// y and argmax (C, N, OD, OH, OW), contiguous: the largest value of each window and where it was
// (kd * KH * KW + kh * KW + kw). A strict > keeps the first maximum in row-major order on ties.
template <typename T, typename I>
__device__ void maxpool_body(const T* x, T* y, int* argmax, const Geometry<I> q) {
    const I total = q.C * q.N * q.OD * q.OH * q.OW;
    GRID_STRIDE_LOOP(I, i, total) {
        I od, oh, ow;
        const I r = split3(i, q.OD, q.OH, q.OW, &od, &oh, &ow);  // r = c * N + n
        const I n = r % q.N;
        const I c = r / q.N;
        const T* corner = x + n * q.XN + c * q.XC + od * q.SD * q.XD + oh * q.SH * q.XH + ow * q.SW * q.XW;
        T best = corner[0];
        int where = 0;
        for (I kd = 0; kd < q.KD; ++kd)
            for (I kh = 0; kh < q.KH; ++kh)
                for (I kw = 0; kw < q.KW; ++kw) {
                    const T value = corner[kd * q.XD + kh * q.XH + kw * q.XW];
                    if (value > best || (value != value && best == best)) {  // a NaN wins, as in NumPy's max
                        best = value;
                        where = (int)((kd * q.KH + kh) * q.KW + kw);
                    }
                }
        y[i] = best;
        argmax[i] = where;
    }
}

template <typename T>
__global__ void maxpool(const T* x, T* y, int* argmax, const long long* g) {
    if (G_NARROW) maxpool_body<T, int>(x, y, argmax, Geometry<int>(g));
    else maxpool_body<T, long long>(x, y, argmax, Geometry<long long>(g));
}

// gx (C, N, D, H, W), contiguous, from gy and argmax (C, N, OD, OH, OW): each input element adds the
// gradients of the windows that contain it and chose it.
template <typename T, typename I>
__device__ void maxpool_backward_body(const T* gy, const int* argmax, T* gx, const Geometry<I> q) {
    const I total = q.C * q.N * q.D * q.H * q.W;
    GRID_STRIDE_LOOP(I, i, total) {
        I d, h, w;
        const I cn = split3(i, q.D, q.H, q.W, &d, &h, &w);  // c * N + n: gy and argmax share it
        // outputs whose window [o * S, o * S + K) contains the position: first = ceil((p - K + 1) / S)
        const I d0 = d >= q.KD ? (d - q.KD) / q.SD + 1 : 0, d1 = d / q.SD < q.OD ? d / q.SD : q.OD - 1;
        const I h0 = h >= q.KH ? (h - q.KH) / q.SH + 1 : 0, h1 = h / q.SH < q.OH ? h / q.SH : q.OH - 1;
        const I w0 = w >= q.KW ? (w - q.KW) / q.SW + 1 : 0, w1 = w / q.SW < q.OW ? w / q.SW : q.OW - 1;
        T sum = T(0);
        for (I od = d0; od <= d1; ++od)
            for (I oh = h0; oh <= h1; ++oh)
                for (I ow = w0; ow <= w1; ++ow) {
                    const I o = ((cn * q.OD + od) * q.OH + oh) * q.OW + ow;
                    const I here = ((d - od * q.SD) * q.KH + (h - oh * q.SH)) * q.KW + (w - ow * q.SW);
                    if (argmax[o] == here) sum += gy[o];
                }
        gx[i] = sum;
    }
}

template <typename T>
__global__ void maxpool_backward(const T* gy, const int* argmax, T* gx, const long long* g) {
    if (G_NARROW) maxpool_backward_body<T, int>(gy, argmax, gx, Geometry<int>(g));
    else maxpool_backward_body<T, long long>(gy, argmax, gx, Geometry<long long>(g));
}

// out (M, N), contiguous: out[i, j] = sum over k of a[i, k] * b[k, j], for use inside a CUDA-graph
// capture, where cuBLAS refuses to run (outside a capture, tinyflux calls cuBLAS).
// s = (M, N, K, a's row and column strides, b's row and column strides, splits, chunk), strides in
// elements, so a transposed view is read without a copy.
//
// Tiled: one block of GEMM_TILE x GEMM_TILE threads computes one GEMM_TILE x GEMM_TILE tile of out,
// one output per thread. It walks along k in steps of GEMM_TILE: the block copies a GEMM_TILE-square
// piece of a and one of b into shared memory, then each thread adds GEMM_TILE products from there.
// Every number read from global memory thus serves GEMM_TILE outputs instead of one.
//
// Split k: a convolution's weight gradient has few outputs and long sums (16 x 9 outputs, each a sum
// over 100,352 positions, for the first MNIST layer): one tile, one block, and the GPU would idle.
// So k is cut into `splits` ranges of `chunk`; each (tile, range) pair is a block of its own and
// writes its partial sums to out[split] (out is then (splits, M, N)), and sum_splits adds them up,
// in a fixed order, so that the result does not change from run to run.
template <typename T>
__global__ void gemm(const T* a, const T* b, T* out, const long long* s) {
    __shared__ T a_tile[GEMM_TILE][GEMM_TILE + 1];  // a_tile[r][k] = a[row0 + r, k0 + k]; +1: no bank conflicts
    __shared__ T b_tile[GEMM_TILE][GEMM_TILE + 1];  // b_tile[k][c] = b[k0 + k, col0 + c]
    const long long M = s[0], N = s[1], K = s[2], splits = s[7], chunk = s[8];
    const long long tile_rows = (M + GEMM_TILE - 1) / GEMM_TILE, tile_cols = (N + GEMM_TILE - 1) / GEMM_TILE;
    const int ty = threadIdx.x / GEMM_TILE, tx = threadIdx.x % GEMM_TILE;  // this thread's place in the tile
    // Copy each tile so that neighbouring threads (consecutive tx) read neighbouring addresses:
    // along k when k is the array's contiguous axis (a plain a, a transposed b), else along the tile.
    const bool a_along_k = s[4] <= s[3], b_along_k = s[5] <= s[6];
    for (long long task = blockIdx.x; task < tile_rows * tile_cols * splits; task += gridDim.x) {  // grid-stride
        const long long split = task / (tile_rows * tile_cols), tile = task % (tile_rows * tile_cols);
        const long long row0 = tile / tile_cols * GEMM_TILE, col0 = tile % tile_cols * GEMM_TILE;
        const long long k_begin = split * chunk, k_end = k_begin + chunk < K ? k_begin + chunk : K;
        T sum = T(0);
        for (long long k0 = k_begin; k0 < k_end; k0 += GEMM_TILE) {
            // thread (ty, tx) copies one number of each tile; outside the matrices, a zero
            const int ar = a_along_k ? ty : tx, ak = a_along_k ? tx : ty;
            const int bk = b_along_k ? tx : ty, bc = b_along_k ? ty : tx;
            a_tile[ar][ak] = row0 + ar < M && k0 + ak < k_end ? a[(row0 + ar) * s[3] + (k0 + ak) * s[4]] : T(0);
            b_tile[bk][bc] = k0 + bk < k_end && col0 + bc < N ? b[(k0 + bk) * s[5] + (col0 + bc) * s[6]] : T(0);
            __syncthreads();
            for (int k = 0; k < GEMM_TILE; ++k) sum += a_tile[ty][k] * b_tile[k][tx];
            __syncthreads();  // the tiles are refilled next round
        }
        if (row0 + ty < M && col0 + tx < N) out[(split * M + row0 + ty) * N + col0 + tx] = sum;
    }
}

// c[i] = partial[0, i] + partial[1, i] + ... for partial (splits, n): the last step of a split gemm.
template <typename T>
__global__ void sum_splits(const T* partial, T* c, long long splits, long long n) {
    GRID_STRIDE_LOOP(long long, i, n) {
        T sum = T(0);
        for (long long split = 0; split < splits; ++split) sum += partial[split * n + i];
        c[i] = sum;
    }
}

// One Adam step over n numbers, in place (the formula is in tinyflux/optim.py). The hyperparameters
// live in device memory, hyper = (lr, beta1, beta2, eps, t) in the order of optim.ADAM_NUMBERS,
// because a captured graph replays the kernel arguments it was captured with: values read from
// memory can change between replays, arguments cannot. The eager step uses the same kernel, so
// there is one Adam for both. count_step runs first, in a single thread, and advances t for the step.
__global__ void count_step(double* hyper) {
    if (blockIdx.x == 0 && threadIdx.x == 0) hyper[4] += 1.0;
}

template <typename T>
__global__ void adam(T* p, const T* g, T* m, T* v, const double* hyper, long long n) {
    const double lr = hyper[0], b1 = hyper[1], b2 = hyper[2], eps = hyper[3], t = hyper[4];
    // 1 - beta is computed in double and then rounded to T, as NumPy rounds (1 - b2) * array: in
    // float, 1.0f - 0.999f is 1.3e-5 off, and Adam amplifies that within a few steps.
    const double correction2 = sqrt(1.0 - pow(b2, t));
    const T step = T(lr * correction2 / (1.0 - pow(b1, t))), eps_hat = T(eps * correction2);
    GRID_STRIDE_LOOP(long long, i, n) {
        const T grad = g[i];
        const T mean = m[i] + T(1.0 - b1) * (grad - m[i]);
        const T square = v[i] + T(1.0 - b2) * (grad * grad - v[i]);
        m[i] = mean;
        v[i] = square;
        p[i] -= step * mean / (sqrt(square) + eps_hat);
    }
}
