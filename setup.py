"""Build fused_lstm._C: the CPU kernels always, the CUDA kernels when they can be built.

CUDA kernels are built when torch was built with CUDA, nvcc is found and the
libcublas torch uses is found (a GPU need not be visible, so GPU-less build hosts
still build them).
FUSED_LSTM_FORCE_CUDA=1 insists on them (failing loudly if impossible),
FUSED_LSTM_FORCE_CUDA=0 leaves them out. TORCH_CUDA_ARCH_LIST and MAX_JOBS are
honoured by torch.utils.cpp_extension.
"""

import glob
import os
import platform
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - explained to the user
    sys.exit(
        "fused_lstm builds against the torch already installed: install torch first "
        "(e.g. `pip install torch==2.13.0`), then `pip install --no-build-isolation .`"
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def want_cuda():
    force = os.environ.get("FUSED_LSTM_FORCE_CUDA")
    torch_has_cuda = torch.version.cuda is not None
    nvcc_found = CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    if force == "0":
        print("fused_lstm: FUSED_LSTM_FORCE_CUDA=0, building the CPU kernels only")
        return False
    if force == "1":
        if not torch_has_cuda:
            sys.exit("fused_lstm: FUSED_LSTM_FORCE_CUDA=1 but this torch was built without CUDA")
        return True
    if not torch_has_cuda:
        print(f"fused_lstm: torch {torch.__version__} has no CUDA, building the CPU kernels only")
        return False
    if not nvcc_found:
        print("fused_lstm: nvcc not found (set CUDA_HOME), building the CPU kernels only")
        return False
    return True


def cublas_library():
    """The libcublas the CUDA kernels link: the one libtorch_cuda loaded with `import torch`
    (GPU or not), else one of the same major version in torch's nvidia packages or under
    CUDA_HOME; None where none is found. Linked by path, so the extension names its soname
    (libcublas.so.13), which the import finds already loaded by libtorch_cuda."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libcublas.so") and os.path.exists(path):
                    return path
    except OSError:  # pragma: no cover - not Linux
        pass
    major = (torch.version.cuda or "").split(".")[0]
    folders = []
    for site in sys.path:
        folders += sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")))
    if CUDA_HOME:
        folders += [os.path.join(CUDA_HOME, "lib64"), os.path.join(CUDA_HOME, "lib")]
        folders += sorted(glob.glob(os.path.join(CUDA_HOME, "targets", "*", "lib")))
    for folder in folders:
        path = os.path.join(folder, f"libcublas.so.{major}")
        if major and os.path.exists(path):
            return path
    return None


def sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def extension():
    cxx = ["-O3", "-fopenmp", "-Wall", "-Wno-unused-parameter", "-Wno-unknown-pragmas",
           "-Wno-psabi"]
    if platform.system() == "Darwin":
        cxx.remove("-fopenmp")
    link = ["-fopenmp"] if "-fopenmp" in cxx else []
    srcs = sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp")
    cuda = want_cuda()
    cublas = cublas_library() if cuda else None
    if cuda and cublas is None:
        message = (f"no libcublas.so.{(torch.version.cuda or '?').split('.')[0]} found (not "
                   f"loaded by torch, not in its nvidia packages nor under CUDA_HOME={CUDA_HOME})"
                   "; the CUDA kernels link cuBLAS")
        if os.environ.get("FUSED_LSTM_FORCE_CUDA") == "1":
            sys.exit(f"fused_lstm: FUSED_LSTM_FORCE_CUDA=1 but {message}")
        print(f"fused_lstm: {message}, building the CPU kernels only")
        cuda = False
    if not cuda:
        return CppExtension("fused_lstm._C", srcs, extra_compile_args={"cxx": cxx},
                            extra_link_args=link)
    srcs += sources("csrc/cuda/*.cpp") + sources("csrc/cuda/*.cu")
    nvcc = ["-O3", "-std=c++17", "-lineinfo"]
    print(f"fused_lstm: linking cuBLAS {cublas}")
    return CUDAExtension(
        "fused_lstm._C",
        srcs,
        define_macros=[("FUSED_LSTM_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=link + [cublas, "-Wl,-rpath," + os.path.dirname(cublas)],
    )


setup(
    name="fused_lstm",
    version="0.1.0",
    description="A drop-in nn.LSTM whose gate GEMMs and cell update run in fused C++/CUDA kernels",
    packages=find_packages(include=["fused_lstm", "fused_lstm.*"]),
    python_requires=">=3.9",
    # No upper pin and no torch in install_requires' resolution path beyond a floor:
    # the build uses the torch already installed and must not pull another one.
    install_requires=["torch>=2.4", "numpy"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
