// Kernel of `centerRegularization`: with c^ = normalize(centers) row-wise and A the
// row-normalised rule (zero diagonal),
//   L_center = mean_i (1 - f_i . c^_{y_i}),   L_proto = mean_c (1 - c^_c . (A c^)_c).
// Since sum_c c^_c . (A c^)_c = sum_c c^_c . (M c^)_c with M = (A + A^T) / 2, one product
// V = M c^ (the heads' GEMM, run by the host: src/wasm/center_regularization.ts) serves
// the value and the gradient
//   d/df_i  = -u/B c^_{y_i}
//   d/dc^_c = -u/B sum_{i: y_i = c} f_i - (2 u w / C) V_c      (w = prototypeWeight)
// which goes through the normalisation by row_finish (a projection in float64).
import { rowDot, normalize_rows } from "./vectors";
import { row_finish } from "./margin_head";

/** ch [c, d] = normalize(centers), inv [c] float32 the factors 1 / max(||c_j||, 1e-12). */
export function center_reg_prep(centers: usize, c: i32, d: i32, ch: usize, inv: usize): void {
  normalize_rows(centers, c, d, ch, inv, 0);
}

/**
 * f [b, d], centers [c, d], ch [c, d] (normalised), v [c, d] = M ch (overwritten by the
 * centre gradient when gf is not 0), labels [b]; rows [2] float64 out (L_center, L_proto);
 * gf [b, d] and gc [c, d] gradient outs (gf = 0: no gradient); inv [c] float32 from
 * center_reg_prep; zeros [c] float32 scratch.
 */
export function center_reg(
  f: usize, b: i32, d: i32, centers: usize, ch: usize, v: usize, c: i32, labels: usize, upstream: f64,
  weight: f64, rows: usize, gf: usize, gc: usize, inv: usize, zeros: usize,
): void {
  const rowBytes = (<usize>d) << 2;
  let center: f64 = 0, proto: f64 = 0;
  for (let i = 0; i < b; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    center += 1 - rowDot(f + <usize>i * rowBytes, ch + <usize>y * rowBytes, d);
  }
  for (let j = 0; j < c; j++) proto += 1 - rowDot(ch + <usize>j * rowBytes, v + <usize>j * rowBytes, d);
  store<f64>(rows, center / <f64>b);
  store<f64>(rows + 8, proto / <f64>c);
  if (!gf) return;
  const a = <f32>(-upstream / <f64>b);
  // gc = -(2 u w / C) V - u/B sum_{i: y_i = c} f_i, then through the normalisation.
  const k = <f32>(-2 * upstream * weight / <f64>c);
  for (let j = 0; j < c * d; j++) store<f32>(gc + ((<usize>j) << 2), k * load<f32>(v + ((<usize>j) << 2)));
  for (let i = 0; i < b; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    const fi = f + <usize>i * rowBytes, cy = ch + <usize>y * rowBytes, gi = gf + <usize>i * rowBytes, gy = gc + <usize>y * rowBytes;
    for (let q = 0; q < d; q++) {
      const o = (<usize>q) << 2;
      store<f32>(gi + o, a * load<f32>(cy + o));
      store<f32>(gy + o, load<f32>(gy + o) + a * load<f32>(fi + o));
    }
  }
  memory.fill(zeros, 0, (<usize>c) << 2);
  row_finish(gc, centers, c, d, inv, zeros, 1);
}
