/**
 * WebAssembly glue of `physicsContrastive` (`assembly/physics_contrastive.ts`): the B x B
 * dot products S = f f^T by the heads' GEMM (`assembly/gemm.ts`), upper blocks only (S is
 * symmetric), the rows of the loss and their coefficients A, then the gradient (A + A^T) f
 * by the same GEMM, block by block.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { ContrastiveProblem } from "../kernels/contrastive.ts";
import { Frame, NONE } from "./frame.ts";

/**
 * Logits larger than this (`max ||f_i||^2 / tau`, e.g. unit features at tau below 1/64)
 * are taken again in float64 ("precise"): a float32 dot product's rounding, times 1/tau,
 * would move them by more than SPEC allows where two of them nearly tie.
 */
const PRECISE_ABOVE = 64;

/** The product block of the gradient (`GRAD` in the kernel). */
const GRAD = 128;

/**
 * The row stride of S in floats: b rounded up to 16 (64 bytes), and an odd multiple of 16
 * so that a walk down a column cycles through every cache set (at b = 1024 or 4096 rows
 * a power of two apart would all land in one).
 */
export function rowStride(b: number): number {
  const ld = Math.ceil(b / 16) * 16;
  return (ld / 16) % 2 ? ld : ld + 16;
}

/** `physicsContrastive` on the WebAssembly backend. */
export function contrastive(p: ContrastiveProblem): Raw {
  const { b, d } = p;
  const invTau = 1 / p.temperature;
  const f = new Frame();
  const F = f.input(p.f), labels = f.input(p.labels), rule = f.input(p.rule);
  const valid = f.input(p.valid), positives = f.input(p.positives), scales = f.input(p.grad ? p.scales : null);
  const G = p.grad ? f.output(p.out?.data ?? null, b * d) : NONE;
  const pad = rowStride(b);
  const FT = f.scratch(b * d * 4), S = f.scratch(b * pad * 4), rows = f.scratch(b * 8);
  const w = f.scratch(b * 4), pm = f.scratch(b * 4), T = f.scratch(p.grad ? GRAD * GRAD * 4 : 0);
  const off = f.scratch(b * 8), ones = f.scratch(b * 4), scale64 = f.scratch(b * 8);
  f.place();
  const k = f.rt.k, at = f.ptr(S);
  k.contrastive_dots(at, pad, f.ptr(F), b, d, f.ptr(FT));
  const dots = new Float32Array(f.rt.buffer, at, b * pad);
  let largest = 0;
  for (let i = 0; i < b; i++) largest = Math.max(largest, dots[i * pad + i]);
  let scale = invTau, ld = pad;
  const precise = largest * invTau > PRECISE_ABOVE;
  if (precise) {
    // S_ij = f_i . f_j / tau - off_i in float64 (off_i: the float32 logits' row maximum),
    // rounded to float32 only once small where it matters; dots64 writes S as [b, b].
    k.contrastive_max(
      at,
      pad,
      b,
      f.ptr(labels),
      f.ptr(rule),
      p.k,
      p.threshold,
      invTau,
      f.ptr(valid),
      f.ptr(off),
      f.ptr(w),
      f.ptr(pm),
    );
    f.f32(ones).fill(1);
    new Float64Array(f.rt.buffer, f.ptr(scale64), b).fill(invTau);
    k.dots64(at, f.ptr(F), b, f.ptr(F), b, d, f.ptr(off), f.ptr(ones), f.ptr(scale64));
    scale = 1;
    ld = b;
  }
  k.contrastive_rows(
    at,
    ld,
    b,
    f.ptr(labels),
    f.ptr(rule),
    p.k,
    p.threshold,
    scale,
    f.ptr(valid),
    f.ptr(positives),
    f.ptr(scales),
    invTau,
    f.ptr(rows),
    f.ptr(w),
    f.ptr(pm),
    precise ? f.ptr(F) : 0,
    d,
    f.ptr(off),
  );
  if (!p.grad) return { rows: [f.f64(rows, b)], grads: {} };
  k.contrastive_grad(at, ld, b, f.ptr(F), d, f.ptr(G), f.ptr(T));
  return { rows: [f.f64(rows, b)], grads: { f: f.take(G) } };
}
