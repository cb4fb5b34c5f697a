"""Datasets: IDX reading, MNIST / Fashion-MNIST loading with checksums and fallbacks, minibatches."""
from .batches import batches, num_batches, to_float_images
from .datasets import cache_dir, load
from .idx import DatasetError, parse_idx, read_idx, write_idx

__all__ = ["DatasetError", "batches", "cache_dir", "load", "num_batches", "parse_idx", "read_idx",
           "to_float_images", "write_idx"]
