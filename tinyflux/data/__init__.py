"""Datasets: IDX reading, MNIST / Fashion-MNIST loading with
checksums and fallbacks, folders of video clips, minibatches."""
from . import augment, moving_digits
from .batches import batches, input_layout, num_batches, to_float_images
from .datasets import cache_dir, load
from .idx import DatasetError, parse_idx, read_idx
from .video import video_folder

__all__ = ["DatasetError", "augment", "batches", "cache_dir", "input_layout", "load",
           "moving_digits", "num_batches", "parse_idx", "read_idx", "to_float_images",
           "video_folder"]
