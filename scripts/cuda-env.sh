# Source this file to build with `--features cuda` on a machine without a system CUDA:
#
#     source scripts/cuda-env.sh [COMPUTE_CAP] [TOOLKIT]   # defaults: 90 (H100/H200), 13.0.2
#     cargo build --release --features cuda
#
# COMPUTE_CAP: 90 = H100/H200, 80 = A100, 89 = L4/RTX 4090 (or $CUDA_COMPUTE_CAP).
# TOOLKIT: the version of PyPI's `cuda-toolkit` (or $CUDA_TOOLKIT_VERSION). The binary runs on
# drivers of that CUDA version and later, never earlier: candle's kernels are compiled to PTX
# here and JIT-compiled by the driver, which refuses PTX of a newer ISA than it knows, and
# cudarc is told the same version (CUDARC_CUDA_VERSION), so the binary asks the driver for no
# symbol newer than its toolkit. The default, 13.0, is the oldest CUDA 13 toolkit whose PyPI
# wheels ship `nvcc` (the cu12 ones ship only ptxas): it emits PTX ISA 9.0, which drivers from
# the 580 series (CUDA 13.0) on accept.
#
# It installs the toolkit into target/cuda-venv-<TOOLKIT>, lays out a CUDA_HOME in
# target/cuda-home-<TOOLKIT> with the unversioned library names the linker wants, and
# generates a `libcuda.so` link stub: the driver library comes with the NVIDIA driver, no
# package ships it, and the binary only needs its symbol names at link time. At run time the
# real `libcuda.so.1` of the driver is used. Idempotent: a second run reuses what is there.

_bge_cuda_setup() {
    local root compute_cap version venv site toolkit home name lib release
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    compute_cap="${1:-${CUDA_COMPUTE_CAP:-90}}"
    version="${2:-${CUDA_TOOLKIT_VERSION:-13.0.2}}"
    venv="$root/target/cuda-venv-$version"
    home="$root/target/cuda-home-$version"

    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || return 1
    fi
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    toolkit="$site/nvidia/cu13"
    # Every component the build uses is named, so that each is the toolkit's own version:
    # `nvcc` alone pulls the newest nvvm and crt (the compiler's front end), whose PTX the
    # toolkit's ptxas refuses. pip only checks when all is in place, so this runs every time.
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "cuda-toolkit[nvcc,nvvm,crt,cudart,cublas,curand,cccl,nvrtc]==$version" || return 1

    mkdir -p "$home/lib64"
    for name in bin include nvvm; do
        ln -sfn "$toolkit/$name" "$home/$name"
    done
    # libfoo.so.N -> libfoo.so, what `-lfoo` looks for.
    for lib in "$toolkit"/lib/lib*.so.*; do
        name="$(basename "$lib")"
        ln -sfn "$lib" "$home/lib64/$name"
        ln -sfn "$lib" "$home/lib64/${name%%.so.*}.so"
    done
    if [ ! -f "$home/lib64/libcuda.so" ]; then
        # Every driver entry point cuda.h declares, and the versioned names (`cuMemAlloc_v2`)
        # its macros map them to: the symbols cudarc's bindings link against.
        {
            grep -oE 'CUDAAPI[[:space:]]+cu[A-Za-z0-9_]+' "$toolkit/include/cuda.h" | awk '{print $2}'
            grep -oE '^#define[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]+cu[A-Za-z0-9_]+' \
                "$toolkit/include/cuda.h" | awk '{print $3}'
        } | sort -u | sed 's/.*/void &(void) {}/' > "$home/libcuda-stub.c"
        gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib64/libcuda.so" \
            "$home/libcuda-stub.c" || return 1
    fi

    export CUDA_HOME="$home"
    export CUDA_PATH="$home"
    export CUDA_COMPUTE_CAP="$compute_cap"
    # "release 13.0, V13.0.88" -> 13000, cudarc's name for the CUDA version it binds.
    release="$("$home/bin/nvcc" --version | grep -oE 'release [0-9]+\.[0-9]+' | grep -oE '[0-9.]+')"
    export CUDARC_CUDA_VERSION="$(( ${release%%.*} * 1000 + ${release#*.} * 10 ))"
    case ":$PATH:" in
        *":$home/bin:"*) ;;
        *) export PATH="$home/bin:$PATH" ;;
    esac
    echo "CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION (nvcc release $release)"
}

_bge_cuda_setup "$@"
