// The dense (fully connected) layer on the CPU: out = in @ W + b, with W in
// Keras's layout (D x U, row-major): forward, backward, and an optimizer
// step fused with the next batch's forward pass.
//
// The products are our own loops, not BLAS (except din, which only
// fine-tuning needs). Each output of the forward pass is the bias plus the
// partial sums of fixed blocks of 512 rows of W, in block order, each a
// sequential sum of fused multiply-adds; each element of the kernel's
// gradient is a sequential sum over the batch. No thread count, kernel or
// tiling changes that order, so results are the same on any number of
// threads, the SIMD kernels (simd.h) equal the portable reference bit for bit, and
// the fused step equals the separate passes bit for bit.
//
// Not reentrant (like parallel_for): call from one thread at a time.
#pragma once
#include "optim.h"

// in: N x D, out: N x U (overwritten). b may be NULL (no bias). Returns -1
// (err_set) only when the partial sums cannot be allocated
// (N x U x ceil(D / 512) floats, kept for the next call).
int dense_forward(const float *in, int N, int D, const float *W, const float *b, int U, float *out);
// ACCUMULATES dW (D x U) += in^T @ dout and db (U) += column sums of dout,
// in order of the batch; OVERWRITES din (N x D) = dout @ W^T. Each of din,
// dW and db may be NULL when not wanted.
void dense_backward(const float *in, int N, int D, const float *W, int U, const float *dout, float *din, float *dW,
                    float *db);

// One optimizer step of a dense layer fused with the next batch's forward
// pass through it:
//   gradient  dW = in^T @ dout and db = column sums of dout, never stored
//             whole: a few rows of dW at a time, each applied as soon as it
//             is known,
//   update    W and b by the rule (kernel_slots and bias_slots as
//             optim_update's slots for W and b; NULL when it has none),
//   forward   next_out = next_in @ W + b with the new weights (skipped when
//             next_in is NULL; next_in is next_N x D, next_out next_N x U).
// At a small batch a step of the 8192 x 256 layer is bound by moving W, and
// this reads and writes it once where the separate passes move it three
// times. Equals dense_backward (into zeroed dW and db), optim_update and
// dense_forward, bit for bit. Returns -1 as dense_forward.
int dense_update_forward(const float *in, int N, int D, float *W, float *b, int U, const float *dout,
                         const OptimRule *rule, float *const *kernel_slots, float *const *bias_slots,
                         const float *next_in, int next_N, float *next_out);

// The product these are made of, for other callers (the Winograd GEMMs,
// winograd.c): out[i][c] = sum over s < S of x[i * ldx + s] * w[s * ldw + c]
// for i < M, c < N (overwritten), each a sequential chain of fused
// multiply-adds, s ascending: the same bits on every SIMD level, thread
// count and M (a row's result does not depend on the other rows). Runs on
// the calling thread; unlike the functions above, reentrant.
void dense_product(const float *x, int ldx, int M, int S, const float *w, int ldw, int N, float *out, int ldo);
