// The face kinds of `marginHead` (adaface, curricularFace, magface; SPEC §7) on the GPU head
// (src/webgpu/margin_head.ts), their math src/webgpu/face_rows.wgsl's (as the losses on cosines):
//   face_rows: one workgroup, after `label` (src/webgpu/margin_head_label.wgsl: ||x_i|| and u_iy in
//              row_v): the batch statistic over the labelled rows (AdaFace: the norms ||x_i||,
//              detached; CurricularFace: the label cosines) and the next state into fout[0..6)
//              (pairs, then float32); each labelled row's label logit T and dT/du into row_v
//              (slots 13, 15; 17 and 19 are 0: MagFace's dependence on ||x|| is face_post's), the
//              hard non-labels' threshold (slot 27: CurricularFace's, else FLT_MAX) and t'
//              (row_v[N MH_RS + 2]); MagFace's g_i, dg/d||x_i||, dT/d||x_i|| into fout.
//   face_post: one invocation per element of x, after the head's gradients: each row's loss into
//              fout (k = 0), and MagFace's gradient through the norm,
//              dX_i += s_i ((p_y - 1) dT/d||x|| + lambda dg/d||x||) x_i / ||x_i||.
// fout: [0, 4) the state (mean, std or t, 0) as pairs, [4, 6) as float32, then per row i at
// 8 + 4 i: (loss, g, dg, dT/d||x||).

// #include "margin_head_params.wgsl"
// #include "margin.wgsl"
// #include "face_rows.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> st: array<f32>;
@group(0) @binding(4) var<storage, read> losses: array<f32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_v: array<f32>;
@group(0) @binding(7) var<storage, read_write> fout: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

fn pair_at(at: u32) -> vec2<f32> { return vec2<f32>(row_v[at], row_v[at + 1u]); }

fn set_pair(at: u32, v: vec2<f32>) {
  row_v[at] = v.x;
  row_v[at + 1u] = v.y;
}

fn face_stat(i: u32) -> vec2<f32> {
  if (P.face == K_ADA) { return pair_at(i * MH_RS + 21u); }
  return pair_at(i * MH_RS + 25u);
}

@compute @workgroup_size(WG)
fn face_rows(@builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let n = P.n;
  let s = next_state(n, t);
  put_state(s, t);
  if (t == 0u) { row_v[n * MH_RS + 2u] = s.a.x + s.a.y; }
  for (var i = t; i < n; i += WG) {
    let base = i * MH_RS;
    put_mag(i, df(0.0), df(0.0), df(0.0));
    row_v[base + 27u] = 3.4028234e38;
    if (labels[i] < 0) { continue; }
    let u = pair_at(base + 25u);
    let nx = pair_at(base + 21u);
    if (P.face == K_CURRICULAR) {
      // (T and dT/du are the label's ArcFace target, from `label`)
      let thr = hard_threshold(u);
      row_v[base + 27u] = thr.x + thr.y;
      continue;
    }
    var tg: Tg;
    if (P.face == K_ADA) {
      tg = ada_target(u, nx, s);
    } else {
      let m = mag_target(u, nx);
      tg = m.t;
      put_mag(i, m.g, m.dg, m.dz);
    }
    set_pair(base + 13u, tg.v);
    set_pair(base + 15u, tg.d);
    set_pair(base + 17u, df(0.0));
    set_pair(base + 19u, df(0.0));
  }
}

@compute @workgroup_size(64)
fn face_post(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + P.a_off) * 64u + lid;
  let i = e / P.d;
  if (i >= P.n) { return; }
  let o = 8u + 4u * i;
  let ce = losses[i];
  if (e % P.d == 0u) { fout[o] = ce; }
  if (P.face != K_MAG || (P.flags & F_GRAD) == 0u || labels[i] < 0) { return; }
  let nx = row_v[i * MH_RS + 21u] + row_v[i * MH_RS + 22u];
  let dn = scales[i] * ((exp(-ce) - 1.0) * fout[o + 3u] + P.lambda * fout[o + 2u]);
  if (!(nx > 0.0) || dn == 0.0) { return; }
  dx[e] += dn * xs[e] / nx;
}
