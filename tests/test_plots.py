"""tinyflux.plots: each picture is a complete PNG file; bad input is refused before drawing."""
import numpy as np
import pytest

from tinyflux import plots

pytest.importorskip("matplotlib", reason="the plot extra is not installed")

PNG = b"\x89PNG\r\n\x1a\n"


def test_training_curves_with_a_learning_rate_drop(tmp_path):
    path = plots.training_curves(tmp_path / "curves.png", [2.0, 1.0, 0.5], [0.5, 0.8, 0.9], [1e-3, 1e-3, 1e-4])
    assert path == str(tmp_path / "curves.png") and (tmp_path / "curves.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left behind


def test_prediction_grid_and_filters(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 28, 28)).astype(np.uint8)
    plots.prediction_grid(tmp_path / "grid.png", images, np.arange(10), np.r_[np.arange(9), 0], columns=4)
    plots.conv_filters(tmp_path / "f2.png", rng.standard_normal((16, 1, 3, 3)))
    plots.conv_filters(tmp_path / "f3.png", rng.standard_normal((4, 1, 3, 3, 3)))  # a video layer
    plots.conv_filters(tmp_path / "f4.png", rng.standard_normal((4, 3, 3, 3, 3)), channel=2)  # colour video
    for name in ("grid.png", "f2.png", "f3.png", "f4.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_bad_input_names_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match="one loss, accuracy and lr per epoch, got 2, 1 and 2"):
        plots.training_curves(tmp_path / "c.png", [1.0, 0.5], [0.9], [1e-3, 1e-3])
    with pytest.raises(ValueError, match=r"\(O, C, kh, kw\).*got shape \(16, 3, 3\) and channel 0"):
        plots.conv_filters(tmp_path / "f.png", np.zeros((16, 3, 3)))
    with pytest.raises(ValueError, match=r"got shape \(16, 3, 3, 3\) and channel 3"):
        plots.conv_filters(tmp_path / "f.png", np.zeros((16, 3, 3, 3)), channel=3)
    with pytest.raises(ValueError, match=r"images \(N, H, W\).*got images \(2, 1, 28, 28\)"):
        plots.prediction_grid(tmp_path / "g.png", np.zeros((2, 1, 28, 28)), [0, 1], [0, 1])
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_gives_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(plots, "available", lambda: False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tinyflux\[plot\]'"):
        plots.training_curves(tmp_path / "c.png", [1.0], [0.5], [1e-3])
