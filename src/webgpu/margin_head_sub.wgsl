// Sub-centres of `marginHead` (`subcenters` K > 1, SPEC §7) in the head's logit tiles
// (src/webgpu/margin_head.wgsl includes this file; src/webgpu/margin_head.ts drives it). W is
// [C K, D], rows c K .. c K + K - 1 class c's; a class's cosine is the largest of its K
// (clamped to [-1, 1]; ties to the smaller row; the first NaN wins: src/kernels/hard_label.ts's
// `subcenter`, the rule of every backend), and its gradient goes to that row alone.
//
// How: a tile of the head's one GEMM (gemm_plain: 64 rows of x by 64 rows of W) holds
// per = floor(64 / K) whole classes (its first per K rows of W; K <= 64), so tiles start at
// multiples of per K rows (windows and chunks of W are multiples of 64 K rows: whole classes,
// aligned bindings). After the GEMM, `sub_pick` forms each class's maximum from the tile's
// dot products: the invocations of 32 rows at a time put their 8 x 8 blocks into the GEMM's
// own workgroup tiles As and Bs (free once the product is done: no more workgroup memory
// than the K = 1 kernels), and the invocation owning a class's first column reads the
// class's K values, keeps the winner's dot product in that column of its block and the
// winner's row of W in `swin`. Then
//   fwd_sub:  finish_fwd as for K = 1, on the classes' first columns (block_logit hands them
//             to sub_block_logit: each class's logit from its winner; the label's class and
//             the other columns none): per (row, tile) the (max, sum-exp) into parts, and
//             every later step of the head is unchanged (combine, finish);
//   grad_sub: du of the chunk's rows of W: at each class's winning row its du as for K = 1,
//             0 at its other K - 1 rows (written by the class's owner, one writer per element);
//             the label's class gets its du at the row `pick` (src/webgpu/margin_head_pick.wgsl)
//             chose for the label's target (row_v[N MH_RS + MH_SUB_AT + i]); dx, dw, fin_x,
//             fin_w then run over the rows of W as for K = 1.
// Cost: the GEMM of K = 1 over C K rows of W (the tile's last 64 - per K columns, 1 of 64
// for K = 3, are computed and dropped), plus per tile two barriers and K workgroup reads per
// class: no [N, C] or [N, C K] buffer, and W is read as often as for K = 1.

// The winning row of W of the class whose first column is (r, c) of this invocation's block; NONE
// at the other columns and those past the window.
var<private> swin: array<u32, 64>;
const NONE: u32 = 0xffffffffu;

fn sub_per() -> u32 { return 64u / P.subs; }

// Entry (lr, col) of the tile's band of 32 rows, in As (rows 0 .. 15) and Bs (16 .. 31).
fn sub_put(lr: u32, col: u32, v: f32) {
  let f = (lr & 15u) * 64u + col;
  if (lr < 16u) { As[f >> 2u][f & 3u] = v; } else { Bs[f >> 2u][f & 3u] = v; }
}

fn sub_get(lr: u32, col: u32) -> f32 {
  let f = (lr & 15u) * 64u + col;
  if (lr < 16u) { return As[f >> 2u][f & 3u]; }
  return Bs[f >> 2u][f & 3u];
}

// Each class of the tile (first row j0 of W) to its largest sub-centre: at the class's first
// column of its owner's block the winner's dot product (acc) and row of W (swin). Call from
// uniform control flow, after the GEMM.
fn sub_pick(i0: u32, j0: u32, t: u32) {
  let K = P.subs;
  let per = sub_per();
  let ty = t >> 3u;
  let tx = t & 7u;
  let end = P.g_off + P.k;
  for (var band = 0u; band < 2u; band++) {
    let mine = (ty >> 2u) == band;
    if (mine) {
      for (var r = 0u; r < 8u; r++) {
        for (var c = 0u; c < 8u; c++) { sub_put(8u * (ty & 3u) + r, 8u * tx + c, acc[2u * r + (c >> 2u)][c & 3u]); }
      }
    }
    workgroupBarrier();
    if (mine) {
      for (var r = 0u; r < 8u; r++) {
        let i = i0 + 8u * ty + r;
        var ai = 1.0;
        if (i < P.n) { ai = row_v[i * MH_RS]; }
        for (var c = 0u; c < 8u; c++) {
          let col = 8u * tx + c;
          swin[8u * r + c] = NONE;
          if (col % K != 0u || col / K >= per || j0 + col >= end) { continue; }
          var best = 0.0;
          var top = 0.0;
          var nan = false;
          var arg = j0 + col;
          for (var k = 0u; k < K; k++) {
            let j = j0 + col + k;
            let v = sub_get(8u * (ty & 3u) + r, col + k);
            // the cosine u as `logit` forms it, clamped to [-1, 1]; the first NaN wins (tested on
            // u itself: clamp's result for a NaN is the implementation's)
            let u = v * ai * bcls[4u * (j - P.g_off)];
            let cu = clamp(u, -1.0, 1.0);
            if (k == 0u || (!nan && (cu > top || is_nan(u)))) {
              top = cu;
              nan = is_nan(u);
              best = v;
              arg = j;
            }
          }
          acc[2u * r + (c >> 2u)][c & 3u] = best;
          swin[8u * r + c] = arg;
        }
      }
    }
    workgroupBarrier();
  }
}

// block_logit with sub-centres: the logit of the class whose first column is (r, c), from its
// winner; NEG for the other columns, rows and classes out of range, ignored rows and the label.
fn sub_block_logit(i0: u32, j0: u32, t: u32, r: u32, c: u32) -> vec2<f32> {
  let i = i0 + 8u * (t >> 3u) + r;
  let win = swin[8u * r + c];
  if (i >= P.n || win == NONE) { return vec2<f32>(NEG, 0.0); }
  let y = labels[i];
  if (y < 0 || win / P.subs == u32(y)) { return vec2<f32>(NEG, 0.0); }
  return logit(acc[2u * r + (c >> 2u)][c & 3u], 0.0, row_v[i * MH_RS], i, win, false).xy;
}

// finish_grad with sub-centres: du [N, k] of the chunk's rows [row0, row0 + k) of W.
fn sub_finish_grad(i0: u32, j0: u32, t: u32) {
  let K = P.subs;
  for (var r = 0u; r < 8u; r++) {
    let i = i0 + 8u * (t >> 3u) + r;
    if (i >= P.n) { continue; }
    let y = labels[i];
    let base = i * MH_RS;
    let ai = row_v[base];
    let ri = row_v[base + 1u];
    let li = row_v[base + 2u];
    let gi = row_v[base + 3u];
    for (var c = 0u; c < 8u; c++) {
      var win = swin[8u * r + c];
      if (win == NONE) { continue; }
      let j0c = win - win % K; // the class's first row
      var du = 0.0;
      if (y >= 0) {
        if (j0c / K == u32(y)) {
          win = bitcast<u32>(row_v[P.n * MH_RS + MH_SUB_AT + i]);
          if ((P.flags & MH_LABEL) != 0u) { du = row_v[base + 4u]; }
        } else if (gi != 0.0) {
          let s = acc[2u * r + (c >> 2u)][c & 3u];
          let z = logit(s, 0.0, ai, i, win, false);
          if (z.z == 0.0) { du = gi * exp(((z.x - ri) + z.y) - li); }
          if ((P.flags & MH_NT) != 0u) { du *= nt_logit(s * ai * bcls[4u * (win - P.g_off)], i, win).y; }
        }
      }
      for (var k = 0u; k < K; k++) {
        let j = j0c + k;
        outv[i * P.k + (j - P.row0)] = select(0.0, du, j == win);
      }
    }
  }
}

// Grid: (row tiles, class tiles of the window), offset by (a_off, b_off) tiles; row0: the
// window's first tile, g_off its first row of W.
@compute @workgroup_size(64)
fn fwd_sub(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let ct = wid.y + P.b_off;
  let i0 = (wid.x + P.a_off) * 64u;
  let j0 = P.g_off + (ct - P.row0) * sub_per() * P.subs;
  gemm_plain(i0, j0, t);
  sub_pick(i0, j0, t);
  finish_fwd(i0, j0, ct, t, false);
}

// Grid: (row tiles, class tiles of the chunk starting at row row0 of W).
@compute @workgroup_size(64)
fn grad_sub(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i0 = (wid.x + P.a_off) * 64u;
  let j0 = P.row0 + (wid.y + P.b_off) * sub_per() * P.subs;
  gemm_plain(i0, j0, t);
  sub_pick(i0, j0, t);
  sub_finish_grad(i0, j0, t);
}
