// marginHead's interTopK (SPEC.md section 7, wespeaker's inter-top-k penalty) on the GPU: each
// row's k largest non-label class cosines, as src/kernels/head.ts's RowTopK finds them on the host,
// in a first pass over W by windows of classes [row0, row0 + k) (src/webgpu/margin_head_inter.ts
// drives it, after the label's terms and before the logits):
//   topk_cos:  the window's cosine tiles (src/webgpu/gemm_loop.wgsl, as src/webgpu/margin_head.wgsl's
//              fwd computes them, so the values are the same float32s), clamped to [nt_lo, nt_hi]:
//              blk [k, N] (class-major, so that topk_scan reads it in order);
//   topk_scan: one invocation per row goes through the window's classes in order (with sub-centres
//              each class's value the largest of its K rows', as src/webgpu/margin_head_sub.wgsl picks
//              it; then filtered as inter_value does: 0 above nt_cut) and keeps the row's
//              top list in `top` [N, 2 + 2 nt_k]: its size, the value to beat (the k-th, -FLT_MAX
//              while fewer), then nt_k values and their classes (as float32s), a heap whose root is
//              the k-th (src/webgpu/topk.wgsl); a value enters only above the k-th, after its equals
//              (ties to the smaller class). The windows are small enough that no invocation loops
//              more than llvmpipe allows (src/webgpu/loops.ts);
//   topk_rows: per row the threshold (the k-th value) and its class into row_v slots 27 and 28;
//              -FLT_MAX and -1 (every non-label hard) for an ignored row, for nt_k = 0 (k >= C - 1),
//              or a row with fewer than k values (NaN cosines).
// Classes are held as float32s: exact below 2^24 (the host refuses more classes with interTopK).

// #include "margin_head_params.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<storage, read_write> row_v: array<f32>;
@group(0) @binding(5) var<storage, read> bcls: array<f32>;
@group(0) @binding(6) var<storage, read_write> blk: array<f32>;
@group(0) @binding(7) var<storage, read_write> top: array<f32>;

// #include "gemm_loop.wgsl"

// The one product x W^T, as src/webgpu/margin_head.wgsl's.
fn tile_a(which: u32, i: u32, k: u32) -> f32 { return xs[i * P.d + k]; }
fn tile_b(which: u32, k: u32, j: u32) -> f32 { return ws[(j - P.g_off) * P.d + k]; }

// Grid: (row tiles, class tiles of the chunk starting at class row0 = g_off).
@compute @workgroup_size(64)
fn topk_cos(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i0 = (wid.x + P.a_off) * 64u;
  let j0 = P.row0 + (wid.y + P.b_off) * 64u;
  var a: array<vec4<f32>, 16>;
  gemm_tiles(&a, t, 0u, i0, P.n, j0, P.g_off + P.k, P.d, true);
  for (var r = 0u; r < 8u; r++) {
    let i = i0 + 8u * (t >> 3u) + r;
    if (i >= P.n) { continue; }
    for (var c = 0u; c < 8u; c++) {
      let j = j0 + 8u * (t & 7u) + c;
      if (j >= P.row0 + P.k) { continue; }
      let u = a[2u * r + (c >> 2u)][c & 3u] * row_v[i * MH_RS] * bcls[4u * (j - P.g_off)];
      blk[(j - P.row0) * P.n + i] = clamp(u, P.nt_lo, P.nt_hi);
    }
  }
}

fn item(wid: vec3<u32>, lid: u32) -> u32 { return (wid.x + P.a_off) * 64u + lid; }

fn tk_get(q: u32) -> f32 { return top[q]; }
fn tk_put(q: u32, v: f32) { top[q] = v; }
// #include "topk.wgsl"

@compute @workgroup_size(64)
fn topk_scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = item(wid, lid);
  if (i >= P.n) { return; }
  let y = labels[i];
  if (y < 0) { return; }
  let kk = P.nt_k;
  let o = i * (2u * kk + 2u);
  let vo = o + 2u;
  let co = vo + kk;
  var size = 0u;
  if (P.row0 != 0u) { size = u32(top[o]); }
  var kth = tk_kth(vo, size, kk);
  // (the window [row0, row0 + k) of W's rows holds whole classes of K rows)
  let K = P.subs;
  for (var q = 0u; q < P.k / K; q++) {
    let j = P.row0 / K + q;
    if (j == u32(y)) { continue; }
    var v = blk[q * K * P.n + i];
    for (var r = 1u; r < K; r++) { v = max(v, blk[(q * K + r) * P.n + i]); }
    if (v > P.nt_cut) { v = 0.0; }
    if (!(v > kth)) { continue; }
    size = tk_offer(vo, co, size, kk, v, f32(j));
    kth = tk_kth(vo, size, kk);
  }
  top[o] = f32(size);
  top[o + 1u] = kth;
}

@compute @workgroup_size(64)
fn topk_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = item(wid, lid);
  if (i >= P.n) { return; }
  let kk = P.nt_k;
  var thr = NEG;
  var tie = -1.0;
  if (kk > 0u && labels[i] >= 0) {
    let o = i * (2u * kk + 2u);
    if (u32(top[o]) == kk) {
      thr = top[o + 2u];
      tie = top[o + 2u + kk];
    }
  }
  row_v[i * MH_RS + 27u] = thr;
  row_v[i * MH_RS + 28u] = tie;
}
