// Preload (`node --import ./node_webgpu.mjs`) for the Node WebGPU check of
// tests/runtimes/main.ts: WebGPU for Node from the `webgpu` npm package (Dawn), set up
// as a user would for softmargin's `init({ backend: "webgpu" })`: `navigator.gpu`.
//
// Here (no GPU; Mesa 22.3) Dawn's Vulkan backend refuses lavapipe (it lacks
// shaderUniform*ArrayDynamicIndexing) and its OpenGL ES backend, given EGL_PLATFORM=
// surfaceless, offers llvmpipe only at featureLevel "compatibility", whose default
// limits are lower than core WebGPU's (256-wide workgroups are refused): so adapters are
// asked for at that level and devices get every limit the adapter has. It prints one
// line, "softmargin-webgpu: adapter ..." or "softmargin-webgpu: none (...)".
// A computed specifier: `webgpu` is installed in the temporary project this runs in, not in the repository.
const dawn = "webgpu";
const { create, globals } = await import(dawn);

Object.assign(globalThis, globals);
const gpu = create(["backend=opengles"]);

async function requestAdapter(options = {}) {
  const adapter = await gpu.requestAdapter({ ...options, featureLevel: "compatibility" });
  if (!adapter) return null;
  const requestDevice = adapter.requestDevice.bind(adapter);
  const all = {};
  for (const k in adapter.limits) if (typeof adapter.limits[k] === "number") all[k] = adapter.limits[k];
  return new Proxy(adapter, {
    get(target, key) {
      if (key === "requestDevice") {
        return (d = {}) => requestDevice({ ...d, requiredLimits: { ...all, ...d.requiredLimits } });
      }
      const v = Reflect.get(target, key);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

const adapter = await requestAdapter();
const info = adapter?.info;
console.log(
  `softmargin-webgpu: ${
    adapter ? `adapter ${info.description || info.vendor} ${info.device}` : "none (requestAdapter gave null)"
  }`,
);
if (adapter) {
  globalThis.navigator = { ...(globalThis.navigator ?? {}), gpu: { requestAdapter } };
  globalThis.SOFTMARGIN_SUITE_WEBGPU = process.env.SOFTMARGIN_SUITE_WEBGPU === "1";
}
