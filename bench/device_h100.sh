#!/usr/bin/env bash
# Runs bench/webgpu_bench.ts on a lent NVIDIA H100 machine (the workplace's device tool; see
# /work/.library/device/README.md). That machine has no Deno, no Vulkan loader and no network, and gets only
# the working tree plus the ignored folders named in `carry`, so both come from here:
#
#   .device/deno.xz   Deno 2.9.6 (x86-64 Linux), xz-compressed (about 30 MB of the 64 MiB a call may carry).
#   .gl/*.deb         the Vulkan loader (libvulkan1) and the GL/EGL dispatch libraries the NVIDIA driver's
#                     Vulkan ICD links against, as amd64 .deb packages.
#
# Prepare them once, here, in the repository root (nothing of it is committed: .device/ is in .gitignore,
# .gl/ goes into .git/info/exclude):
#
#   mkdir -p .device
#   xz -9 -T0 -k -c "$(command -v deno || ls /root/.npm/_npx/*/node_modules/@deno/linux-x64-glibc/deno | head -1)" \
#     > .device/deno.xz                      # the real binary, not npx's wrapper; `npx -y deno@2.9.6 --version` fetches it
#   echo /.gl/ >> "$(git rev-parse --git-path info/exclude)"
#   mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update
#   (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#
# Then call the device tool's `run` with command `bash bench/device_h100.sh`, carry [".device", ".gl"], timeout_s
# 600. It writes webgpu_h100.log and webgpu_h100.json to $OUT (./device-out when unset). By default it runs
# webgpu_bench.ts --full --require-gpu (exit 1 without a hardware adapter) on the latency sizes, the four row shapes,
# 8192 x 32000 (1 GiB per matrix) and the head at C = 10000 and 100000; arguments replace those (e.g. --quick).
# SOFTMARGIN_ALLOW_SOFTWARE=1 drops --require-gpu. The benchmark imports no npm package: node_modules need not travel.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"

main() {
  echo "== $(date -u +%FT%TZ) $(uname -m) $(nproc) CPUs"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  fi
  # Deno
  if [[ ! -f .device/deno.xz ]]; then
    echo "bench/device_h100.sh: .device/deno.xz missing (see the header of this script; carry .device)" >&2
    return 2
  fi
  bin=/tmp/softmargin-deno
  mkdir -p "$bin"
  if command -v xz >/dev/null; then
    xz -d -c .device/deno.xz >"$bin/deno"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      .device/deno.xz "$bin/deno"
  fi
  chmod +x "$bin/deno"
  export PATH="$bin:$PATH" DENO_DIR=/tmp/softmargin-deno-dir DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1 NO_COLOR=1
  deno --version
  # The Vulkan loader and the NVIDIA ICD
  if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    echo "bench/device_h100.sh: no .gl/*.deb (carry .gl); relying on the machine's own Vulkan loader" >&2
  fi
  ldconfig -p | grep -q 'libvulkan\.so\.1' || echo "bench/device_h100.sh: WARNING: no libvulkan.so.1" >&2
  icd=false
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    if compgen -G "$d/nvidia*.json" >/dev/null; then icd=true; fi
  done
  if [[ $icd == false && -z ${VK_DRIVER_FILES:-} && -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  fi
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-(default search)}"
  # The benchmark
  args=("$@")
  if ((${#args[@]} == 0)); then
    args=(--full --shapes "1x8,1x1000,8x1000,32x1000,128x1000,1024x1000,256x1000,4096x1000,1024x32000,64x100000,8192x32000,256x512x10000,256x512x100000")
  fi
  require=(--require-gpu)
  if [[ ${SOFTMARGIN_ALLOW_SOFTWARE:-} == 1 ]]; then require=(); fi
  set +e
  deno run -A bench/webgpu_bench.ts "${require[@]+"${require[@]}"}" --json "$OUT/webgpu_h100.json" "${args[@]}"
  rc=$?
  set -e
  echo "== webgpu_bench.ts exit status $rc"
  return "$rc"
}

main "$@" 2>&1 | tee "$OUT/webgpu_h100.log"
exit "${PIPESTATUS[0]}"
