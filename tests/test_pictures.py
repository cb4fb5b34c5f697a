"""docs/make_pictures.py: the walkthrough's explanatory pictures are current (drawn again, they match the files)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_pictures_are_what_the_script_draws(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    from matplotlib.image import imread
    spec = importlib.util.spec_from_file_location("make_pictures", ROOT / "docs" / "make_pictures.py")
    make_pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_pictures)
    drawn = make_pictures.make_all(tmp_path)
    assert sorted(path.stem for path in drawn) == sorted(make_pictures.NAMES)
    for path in drawn:
        committed = ROOT / "docs" / "images" / path.name
        assert committed.exists(), f"{committed.name} is missing: run python docs/make_pictures.py"
        new, old = imread(path), imread(committed)
        assert new.shape == old.shape, f"{path.name} changed size: run python docs/make_pictures.py"
        # the same drawing; a newer matplotlib may move a few pixels of text, a changed picture moves many
        assert np.abs(new - old).mean() < 0.01, f"{path.name} is out of date: run python docs/make_pictures.py"
