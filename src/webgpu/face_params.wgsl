  // The face margin kinds' fields (src/webgpu/face_rows.wgsl), included in the structs of the
  // kernels that compute their rows: src/webgpu/face_margin.wgsl and the heads'.
  face: u32,          // 0 adaface, 1 curricularFace, 2 magface
  st_gpu: u32,        // 1: the state input is a float32 GPU matrix, else pairs from the host
  easy: u32,          // magface's easyMargin
  lambda: f32,        // magface's lambda
  p_m: vec2<f32>,     // adaface's margin; magface's lowerMargin
  p_h: vec2<f32>,     // adaface's h; magface's slope (upperMargin - lowerMargin) / (upperNorm - lowerNorm)
  p_alpha: vec2<f32>, // adaface's alpha, curricularFace's momentum
  p_beta: vec2<f32>,  // 1 - p_alpha
  p_eps: vec2<f32>,   // adaface's eps
  p_lo: vec2<f32>,    // adaface's 0.001; magface's lowerNorm
  p_hi: vec2<f32>,    // adaface's 100; magface's upperNorm
  p_iu2: vec2<f32>,   // magface's 1 / upperNorm^2
