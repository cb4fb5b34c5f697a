from setuptools import find_packages, setup

setup(
    name="tinyflux",
    version="0.1.0",
    description="A teaching-sized deep learning framework on NumPy and CuPy",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tinyflux", "tinyflux.*"]),
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "h5py>=3.8", "tqdm>=4.60"],
    extras_require={
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        # the tests draw the plots (matplotlib) and write and read video files (av) too
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.6", "av>=12"],
        "bench": ["threadpoolctl>=3"],
        "plot": ["matplotlib>=3.6"],
        "video": ["av>=12"],  # PyAV: FFmpeg's decoders, for tinyflux.data.video_folder
    },
    license="MIT",
)
