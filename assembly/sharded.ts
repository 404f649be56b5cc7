// Kernels of a shard of a class-sharded softmax (src/losses/sharded.ts): a shard holds
// columns [offset, offset + c) of the logits. Row i's logits are z_j = s * x_j (x_j clamped
// to [-1, 1] first with `clamp`), the label's replaced by target[2i] (derivative
// target[2i+1]) where the shard holds it; local[i] is the label's column here, -1 when it
// is on another shard, -2 for an ignored row.
//   shard_stats: max_i = max_j z_ij (the label's included), sum_i = sum_{j != y} e^(z_ij - max_i),
//                and with `below` sum_j w_j (max_i - z_ij) (label smoothing: s = 1, no clamp).
//   shard_grads: g_ij = dz_j/dx_j (A_i e^(z_ij - M_i) - U_i w_j) for j != y, g_iy = G_i
//                (M_i, A_i, U_i, G_i float64 from the merged statistics, computed by the host).
// Exponentials are taken against m32 = M / s rounded to float32 and put back against M by
// the factor e^(m32 s - M), as in the unsharded kernel (cross_entropy.ts).
// With crossEntropy's softcap c != 0 (s = 1, no clamp) each row is first capped into a
// scratch row `cap` [2, c] (z_j = c tanh(x_j / c) - h, h the row's capped maximum, and
// d_j = 1 - tanh^2, softmax.ts's rowSoftcap), which the row's passes then read against the
// maximum less h; shard_grads multiplies the gradient row by d (the label's G already holds
// its derivative).
// With label smoothing the target's mass sits on every weighted class: at the shard's largest
// other column r, with p_r -> 1 (a label of small weight), g_r = A e_r - U w_r is a difference
// of two nearly equal numbers, as small as 1 - p_r. As in the unsharded kernel, shard_stats
// leaves r out of the float32 sum and adds its exponential back in float64 (so the merged sum
// holds 1 - p_r to float64 accuracy), and shard_grads writes g_r from float64 pieces.
import { rowMax, rowFind, rowExpSum, rowExpSumClamped, rowAffine, rowAxpby, rowZero, rowSumBelow, rowDotBelow, rowSoftcap, rowMul } from "./softmax";
import { expNeg1 } from "./math";
import { rowSubMax, rowScatter, rowNonTarget } from "./cross_entropy";

// The margin losses' sub-centres (sub > 1): a row of z is [c * sub]; as in cross_entropy.ts each row
// first becomes its class cosines in the scratch subs [2, c] (rowSubMax), and shard_grads writes the
// gradient row from the scratch (rowScatter).
// The margin losses' inter-class options (ntc = [lo, hi, a, b, g, cut] f64, nt = per row (thr, tie)
// f64 or 0; tie a column of the shard): as in cross_entropy.ts each row is first transformed into the
// scratch `cap` [2, c] (rowNonTarget: x'_j and its derivative d_j over s), run unclamped, and
// shard_grads multiplies the gradient row by d.

// @ts-ignore: decorator
@inline function expSumIn(row: usize, lo: i32, hi: i32, m: f32, s: f32, out: usize, clamp: i32): f64 {
  const o = <usize>lo << 2;
  if (hi <= lo) return 0;
  return clamp ? rowExpSumClamped(row + o, hi - lo, m, s, out ? out + o : 0) : rowExpSum(row + o, hi - lo, m, s, out ? out + o : 0);
}

/** The largest clamp?(x_j) over the row's columns other than y (y = c: none), -inf for none. */
// @ts-ignore: decorator
@inline function otherMax(zr: usize, c: i32, y: i32, clamp: i32): f32 {
  const after = y < c ? y + 1 : c;
  let mx = max(rowMax(zr, y), rowMax(zr + ((<usize>after) << 2), c - after));
  if (clamp && mx > -Infinity) mx = min(max(mx, <f32>-1), <f32>1);
  return mx;
}

/** The first column other than y (y = c: none) holding the row's largest other value mx, -1 for none (a NaN row). */
// @ts-ignore: decorator
@inline function otherArgmax(zr: usize, c: i32, y: i32, mx: f32): i32 {
  let r = rowFind(zr, c, mx);
  if (r == y) r = y + 1 + rowFind(zr + ((<usize>y + 1) << 2), c - y - 1, mx);
  return r < c && load<f32>(zr + (<usize>r << 2)) == mx ? r : -1;
}

/** Row i's non-target transform (label column yl, -1: elsewhere) into the scratch cap [2, c]. */
// @ts-ignore: decorator
@inline function ntRow(zr: usize, cap: usize, c: i32, yl: i32, ntc: usize, nt: usize, i: i32): void {
  const thr = nt ? load<f64>(nt + (<usize>i << 4)) : Infinity;
  const tie = nt ? <i32>load<f64>(nt + (<usize>i << 4) + 8) : -1;
  rowNonTarget(zr, cap, cap + (<usize>c << 2), c, yl >= 0 ? yl : c, ntc, thr, tie);
}

/**
 * z: [rows, c] float32; local [rows] int32; target [rows, 2] float64; out max, sum [rows] float64; below [rows] or 0;
 * weight [c] or 0; softcap c or 0, cap a scratch [2, c] float32; sub the sub-centres (z [rows, c * sub]), subs a
 * scratch [2, c] or 0; ntc, nt the non-target transform or 0 (then cap is its scratch).
 */
export function shard_stats(
  z: usize, rows: i32, c: i32, local: usize, scale: f64, clampIn: i32, target: usize,
  maxOut: usize, sumOut: usize, below: usize, weight: usize, softcap: f64, cap: usize, sub: i32, subs: usize,
  ntc: usize, nt: usize,
): void {
  const s32 = <f32>scale;
  for (let i = 0; i < rows; i++) {
    let zr = z + ((<usize>i * <usize>c * <usize>sub) << 2);
    const yl = load<i32>(local + (<usize>i << 2));
    const o8 = <usize>i << 3;
    if (yl == -2) {
      store<f64>(maxOut + o8, 0);
      store<f64>(sumOut + o8, 0);
      if (below) store<f64>(below + o8, 0);
      continue;
    }
    if (sub > 1) {
      rowSubMax(zr, subs, subs + (<usize>c << 2), c, sub);
      zr = subs;
    }
    let h: f64 = 0; // the shift of a capped row
    let clamp = clampIn;
    if (softcap != 0) {
      h = rowSoftcap(zr, cap, cap + (<usize>c << 2), c, softcap);
      zr = cap;
    } else if (ntc) {
      ntRow(zr, cap, c, yl, ntc, nt, i);
      zr = cap;
      clamp = 0;
    }
    const y = yl >= 0 ? yl : c;
    const mx = otherMax(zr, c, y, clamp);
    let m = <f64>mx * scale + h;
    if (yl >= 0) m = max(m, load<f64>(target + (<usize>i << 4)));
    const m32 = <f32>((m - h) / scale);
    const F = Math.exp(<f64>m32 * scale - (m - h));
    // With smoothing (s = 1, no clamp) the largest other column r is summed apart, in float64.
    const r = below ? otherArgmax(zr, c, y, mx) : -1;
    const lo = r < 0 ? y : min(r, y), hi = r < 0 ? y : max(r, y);
    let Sx = expSumIn(zr, 0, lo, m32, s32, 0, clamp) + expSumIn(zr, hi < c ? hi + 1 : c, c, m32, s32, 0, clamp);
    if (r >= 0) Sx += expSumIn(zr, lo + 1, hi, m32, s32, 0, clamp) + <f64>expNeg1((mx - m32) * s32);
    const S = F * Sx;
    store<f64>(maxOut + o8, m);
    store<f64>(sumOut + o8, S);
    // sum_j w_j (m - x_j) (s = 1, no target replacement: m32 = m is the row's maximum)
    if (below) store<f64>(below + o8, weight ? rowDotBelow(weight, zr, m32, c) : rowSumBelow(zr, m32, c));
  }
}

/**
 * z, g: [rows, c] float32 (g may equal z); M, A, U, G: [rows] float64; weight [c] float32 or 0; softcap, cap, sub,
 * subs as shard_stats (z, g [rows, c * sub]).
 */
export function shard_grads(
  z: usize, g: usize, rows: i32, c: i32, local: usize, weight: usize, scale: f64, clampIn: i32,
  M: usize, A: usize, U: usize, G: usize, softcap: f64, cap: usize, sub: i32, subs: usize,
  ntc: usize, nt: usize,
): void {
  const s32 = <f32>scale;
  const width = <usize>c * <usize>sub;
  for (let i = 0; i < rows; i++) {
    let zr = z + ((<usize>i * width) << 2);
    const gFull = g + ((<usize>i * width) << 2);
    let gr = gFull;
    const yl = load<i32>(local + (<usize>i << 2));
    if (yl == -2) {
      rowZero(gr, <i32>width);
      continue;
    }
    if (sub > 1) {
      rowSubMax(zr, subs, subs + (<usize>c << 2), c, sub);
      zr = subs;
      gr = subs;
    }
    let h: f64 = 0; // the shift of a capped row
    let clamp = clampIn;
    if (softcap != 0) {
      h = rowSoftcap(zr, cap, cap + (<usize>c << 2), c, softcap);
      zr = cap;
    } else if (ntc) {
      ntRow(zr, cap, c, yl, ntc, nt, i);
      zr = cap;
      clamp = 0;
    }
    const o8 = <usize>i << 3;
    const m = load<f64>(M + o8) - h;
    const m32 = <f32>(m / scale);
    const F = Math.exp(<f64>m32 * scale - m);
    const y = yl >= 0 ? yl : c;
    const u = load<f64>(U + o8) * scale;
    // Smoothing (s = 1, no clamp): the largest other column r and its value, read before g may overwrite z.
    const mx = u != 0 ? otherMax(zr, c, y, 0) : 0;
    const r = u != 0 ? otherArgmax(zr, c, y, mx) : -1;
    // The exponentials against m32 into g (0 where the clamp passes no gradient), the label's
    // column left out (its cosine times s may exceed M: its value is G).
    expSumIn(zr, 0, y, m32, s32, gr, clamp);
    expSumIn(zr, y < c ? y + 1 : c, c, m32, s32, gr, clamp);
    // g = s (A F e - U w): the logit scale joins the row's coefficients.
    const ga = <f32>(load<f64>(A + o8) * scale * F);
    if (weight && u != 0) rowAxpby(gr, weight, c, ga, <f32>-u);
    else rowAffine(gr, gr, c, ga, <f32>u);
    // g_r from float64 pieces (e_r as shard_stats takes it: 1 where r holds the row maximum).
    if (r >= 0) {
      const er = F * <f64>expNeg1((mx - m32) * s32);
      const wr = weight ? <f64>load<f32>(weight + (<usize>r << 2)) : 1;
      store<f32>(gr + (<usize>r << 2), <f32>(scale * (load<f64>(A + o8) * er - load<f64>(U + o8) * wr)));
    }
    if (softcap != 0 || ntc) rowMul(gr, cap + (<usize>c << 2), c);
    if (yl >= 0) store<f32>(gr + (<usize>yl << 2), <f32>load<f64>(G + o8));
    if (sub > 1) rowScatter(gFull, subs, subs + (<usize>c << 2), c, sub);
  }
}
