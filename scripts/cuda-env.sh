# Source this file to build with `--features cuda` on a machine without a system CUDA:
#
#     source scripts/cuda-env.sh [COMPUTE_CAP]     # default 90 (H100); 80 = A100, 89 = L4/4090
#     cargo build --release --features cuda
#
# It installs the CUDA 13.4 toolkit from PyPI into target/cuda-venv (PyPI's cu12 nvcc wheel
# ships no nvcc; cudarc accepts CUDA up to 13.4), lays out a CUDA_HOME in target/cuda-home with
# the unversioned library names the linker wants, and generates a `libcuda.so` link stub: the
# driver library comes with the NVIDIA driver, no package ships it, and the binary only needs
# its symbol names at link time. At run time the real `libcuda.so.1` of the driver is used.
# Idempotent: a second run reuses what is there.

_bge_cuda_setup() {
    local root compute_cap venv site toolkit home name lib
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    compute_cap="${1:-${CUDA_COMPUTE_CAP:-90}}"
    venv="$root/target/cuda-venv"
    home="$root/target/cuda-home"

    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || return 1
    fi
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    toolkit="$site/nvidia/cu13"
    if [ ! -x "$toolkit/bin/nvcc" ]; then
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "cuda-toolkit[nvcc,cudart,cublas,curand,cccl]==13.4.3" || return 1
    fi

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
    case ":$PATH:" in
        *":$home/bin:"*) ;;
        *) export PATH="$home/bin:$PATH" ;;
    esac
    echo "CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP ($(nvcc --version | grep -o 'release [0-9.]*'))"
}

_bge_cuda_setup "$@"
