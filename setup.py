from setuptools import find_packages, setup

setup(
    name="tinyflux",
    version="0.1.0",
    description="A teaching-sized deep learning framework on NumPy and CuPy",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tinyflux", "tinyflux.*"]),
    package_data={"tinyflux.backends": ["kernels.cu"]},  # the CUDA source, read when the kernels are compiled
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "h5py>=3.8", "tqdm>=4.60"],
    extras_require={
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        # NCCL for multi-GPU data parallelism: CuPy loads it from these wheels when present
        "nccl12": ["nvidia-nccl-cu12"],
        "nccl13": ["nvidia-nccl-cu13"],
        # Intel GPUs (--device xpu): dpnp and dpctl; the wheels bring SYCL, MKL and an OpenCL runtime (about 2.9 GB)
        "xpu": ["dpnp>=0.20"],
        # several processes: mpi4py, with the site's MPI on a cluster or `pip install mpich` on one machine;
        # threadpoolctl shares the cores out between the ranks
        "mpi": ["mpi4py>=3.1", "threadpoolctl>=3"],
        # the tests draw the plots (matplotlib), write and read video files (av), start 2-rank MPI jobs
        # (mpi4py, with the mpich wheel's mpiexec), run the walkthrough as a notebook (jupytext), export
        # models to ONNX and run them in ONNX Runtime (onnx, onnxruntime, safetensors), and compare the
        # Numba kernels with the NumPy code (numba), and run every backend test on PyTorch's tensors (torch, on
        # its CPU device). The cap keeps pip on a release whose CPU build it can find: with no cap it may take a
        # CUDA build of several GB, which the tests do not need (the CPU build alone: install it first from
        # https://download.pytorch.org/whl/cpu)
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.6", "av>=12", "mpi4py>=3.1", "mpich",
                 "threadpoolctl>=3", "jupytext>=1.14", "onnx>=1.14", "onnxruntime>=1.16", "safetensors>=0.4",
                 "numba>=0.59", "torch>=2.1,<2.14"],
        # Apple's GPUs (--device mps), and AMD and Intel GPUs through PyTorch's ROCm and XPU builds
        # (--device torch:cuda, torch:xpu): which build fits which GPU is in docs/gpu.md
        "torch": ["torch>=2.1"],
        # Numba compiles tinyflux's CPU kernels (tinyflux/backends/numba_ops.py, numba_blocks.py): the
        # convolution-pooling layers;
        # threadpoolctl keeps BLAS's threads from taking the cores the kernels run on
        "fast": ["numba>=0.59", "threadpoolctl>=3"],
        "bench": ["threadpoolctl>=3"],
        "plot": ["matplotlib>=3.6"],
        "video": ["av>=12"],  # PyAV: FFmpeg's decoders, for tinyflux.data.video_folder
        # tf.onnx.export / tf.onnx.load, and tf.safetensors and tf.load_state_dict for weights from elsewhere;
        # onnxruntime runs an exported model (on CPUs, or with its GPU builds on other vendors' GPUs)
        "onnx": ["onnx>=1.14", "safetensors>=0.4"],
        "onnxruntime": ["onnxruntime>=1.16"],
        # docs/make_notebook.py writes the walkthrough as a notebook (jupytext); Jupyter Notebook opens it
        "notebook": ["jupytext>=1.14", "notebook>=7"],
    },
    license="MIT",
)
