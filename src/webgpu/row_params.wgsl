  // The fields every row kernel's struct begins with (included there; src/webgpu/context.ts's
  // runRows writes them): one workgroup per row of a dispatch of n rows.
  n: u32,       // rows in this dispatch
  c: u32,       // columns (classes)
  row0: u32,    // index of this dispatch's first row in the per-row arrays
  a_off: u32,   // element offset of row 0 in a
  b_off: u32,   // element offset of row 0 in b
  g_off: u32,   // element offset of row 0 in g
  h_off: u32,   // element offset of row 0 in h
  rs_in: u32,   // stride of row_in
  rs_out: u32,  // stride of row_out
  flags: u32,   // the F_* bits (src/webgpu/common.wgsl)
