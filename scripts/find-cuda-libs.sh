#!/usr/bin/env bash
# Finds the CUDA libraries attnas loads at run time (cudarc dlopens them by name: cuBLAS, cuBLASLt and
# NVRTC of CUDA 13, NCCL 2) and prints the `export` lines that make the loader find them; a report of
# which copy each one resolves to goes to stderr. Used by the GPU bundle's run.sh:
#
#   eval "$(find-cuda-libs.sh)"
#
# Where it looks, in order (the first hit wins):
#   1. folders the loader already searches: $LD_LIBRARY_PATH, then the ld.so cache (`ldconfig -p`);
#   2. CUDA toolkit folders (/usr/local/cuda*/lib64, .../targets/*/lib), which are often not in the cache;
#   3. the `nvidia/*/lib` folders of Python's site-packages (the pip wheels: nvidia/cu13/lib holds
#      cuBLAS and NVRTC 13, nvidia/nccl/lib NCCL), for GPU images whose CUDA lives only in Python.
# A hit from 2 or 3 puts its folder on LD_LIBRARY_PATH. For NVRTC it also exports NVRTC_LIB (the 13.0
# libnvrtc needs its builtins preloaded, see src/backend/cuda/nvrtc.rs) and, when the headers sit beside
# it, NVRTC_INCLUDE (cuda_fp16.h, for kernels compiled at run time).
#
# Overrides, for tests: ATTNAS_LOADER_DIRS (instead of LD_LIBRARY_PATH + the cache), ATTNAS_CUDA_DIRS
# (toolkit folders) and ATTNAS_PYTHON_SITE (site-packages folders), each a colon-separated list.
set -uo pipefail

LIBS="libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libnccl.so.2"

loader_dirs() {
  if [ -n "${ATTNAS_LOADER_DIRS+x}" ]; then tr ':' '\n' <<<"$ATTNAS_LOADER_DIRS"; return; fi
  tr ':' '\n' <<<"${LD_LIBRARY_PATH:-}"
  ldconfig -p 2>/dev/null | sed -n 's|.* => \(.*\)/[^/]*$|\1|p' | sort -u
}
cuda_dirs() {
  if [ -n "${ATTNAS_CUDA_DIRS+x}" ]; then tr ':' '\n' <<<"$ATTNAS_CUDA_DIRS"; return; fi
  ls -d /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/*/lib 2>/dev/null
}
python_site_dirs() {
  if [ -n "${ATTNAS_PYTHON_SITE+x}" ]; then tr ':' '\n' <<<"$ATTNAS_PYTHON_SITE"; return; fi
  command -v python3 >/dev/null || return 0
  python3 -c 'import site, sys
dirs = list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()] + sys.path
print("\n".join(d for d in dirs if d))' 2>/dev/null
}

ADD=""
for lib in $LIBS; do
  hit="" how=""
  while IFS= read -r d; do
    [ -n "$d" ] && [ -e "$d/$lib" ] && { hit="$d/$lib"; how="loader path"; break; }
  done < <(loader_dirs)
  if [ -z "$hit" ]; then
    while IFS= read -r d; do
      [ -n "$d" ] && [ -e "$d/$lib" ] && { hit="$d/$lib"; how="CUDA toolkit folder"; break; }
    done < <(cuda_dirs)
  fi
  if [ -z "$hit" ]; then
    while IFS= read -r sp; do
      for f in "$sp"/nvidia/*/lib/"$lib"; do
        [ -e "$f" ] && { hit="$f"; how="Python package ($(basename "$(dirname "$(dirname "$f")")"))"; break 2; }
      done
    done < <(python_site_dirs)
  fi
  if [ -z "$hit" ]; then
    echo "cuda libs: $lib: not found" >&2
    continue
  fi
  echo "cuda libs: $lib: $hit [$how]" >&2
  dir="$(dirname "$hit")"
  if [ "$how" != "loader path" ]; then
    case ":$ADD:" in *":$dir:"*) ;; *) ADD="${ADD:+$ADD:}$dir" ;; esac
  fi
  if [ "$lib" = libnvrtc.so.13 ]; then
    echo "export NVRTC_LIB='$hit'"
    [ -e "$dir/../include/cuda_fp16.h" ] && echo "export NVRTC_INCLUDE='$(cd "$dir/../include" && pwd)'"
  fi
done
if [ -n "$ADD" ]; then
  echo "export LD_LIBRARY_PATH='$ADD'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
fi
