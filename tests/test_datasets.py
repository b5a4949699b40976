"""Real data sets turned into latent files (docs/model.md §11.5): fastsgd/datasets.py, the
`fastsgd latents` command and fastsgd.latent_data.save_latents."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

import fastsgd
from fastsgd.cli import cli
from fastsgd.datasets import (DIGITS_MIN_VARIANCE, MissingPackage, digits_columns,
                              image_patches, make_latents, patches_latents,
                              projection_kurtosis)
from fastsgd.latent_data import content_hash, read_array, save_latents


def test_image_patches_against_a_loop():
    image = np.arange(20 * 13, dtype=float).reshape(20, 13)
    rows = image_patches(image, 4, 3)
    expected = [image[i:i + 4, j:j + 4].ravel() for i in range(0, 17, 3)
                for j in range(0, 10, 3)]
    np.testing.assert_array_equal(rows, np.array(expected))


def test_patches():
    import pywt.data
    X = patches_latents()
    every = np.concatenate([image_patches(img / 255.0, 16, 8)
                            for img in (pywt.data.ascent(), pywt.data.camera())])
    assert every.shape == (2 * 63 * 63, 256)
    flat = np.array([len(set(row)) == 1 for row in every])
    assert flat.sum() == 13
    np.testing.assert_array_equal(X, every[~flat])
    assert X.shape == (7925, 256) and X.dtype == np.float64
    assert X.min() >= 0.0 and X.max() <= 1.0
    np.testing.assert_array_equal(X[0], pywt.data.ascent()[:16, :16].ravel() / 255.0)
    np.testing.assert_array_equal(X[-1], pywt.data.camera()[-16:, -16:].ravel() / 255.0)


def test_digits_keep_the_pixels_that_vary():
    from sklearn.datasets import load_digits
    pixels = load_digits().data / 16.0
    X = make_latents("digits")
    kept = [j for j in range(64) if np.var(pixels[:, j]) >= DIGITS_MIN_VARIANCE]
    assert X.shape == (1797, len(kept)) == (1797, 52)
    np.testing.assert_array_equal(X, pixels[:, kept])
    np.testing.assert_array_equal(digits_columns(pixels), kept)
    assert np.var(X, axis=0).min() >= DIGITS_MIN_VARIANCE


def test_unknown_names_and_missing_packages(monkeypatch):
    with pytest.raises(ValueError, match="one of patches, digits"):
        make_latents("mnist")
    monkeypatch.setitem(sys.modules, "pywt", None)
    monkeypatch.setitem(sys.modules, "pywt.data", None)
    with pytest.raises(MissingPackage, match=r"pip install 'fastsgd\[data\]'"):
        make_latents("patches")
    result = CliRunner().invoke(cli, ["latents", "patches", "--out", "never.npy"])
    assert result.exit_code == 2 and "ships with PyWavelets" in result.output


def test_projection_kurtosis_tells_gaussian_from_laplace():
    rng = np.random.default_rng(0)
    gauss = projection_kurtosis(rng.standard_normal((20000, 30)))
    laplace = projection_kurtosis(rng.laplace(size=(20000, 3)), directions=50)
    assert abs(np.median(gauss)) < 0.05
    assert np.median(laplace) > 0.5          # 3 sources: a projection keeps about 3/3 = 1


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_save_latents_is_exclusive_or_atomic(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    a, b = np.arange(12.0).reshape(4, 3), -np.arange(12.0).reshape(4, 3)
    assert save_latents(a, str(path)) == str(path)
    np.testing.assert_array_equal(read_array(str(path)), a)
    with pytest.raises(FileExistsError):
        save_latents(b, str(path))
    np.testing.assert_array_equal(read_array(str(path)), a)
    save_latents(b, str(path), overwrite=True)
    np.testing.assert_array_equal(read_array(str(path)), b)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]   # no temporary left


def test_the_pipeline_from_the_command_to_a_run(tmp_path):
    out = tmp_path / "digits.npy"
    result = CliRunner().invoke(cli, ["latents", "digits", "--out", str(out)])
    assert result.exit_code == 0, result.output
    X = np.load(out)
    assert f"shape (1797, 52), sha256 {content_hash(X)}" in result.output
    for kind in ("none:", "population:", "whiten:"):
        assert kind in result.output
    again = CliRunner().invoke(cli, ["latents", "digits", "--out", str(out)])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output
    cfg = fastsgd.SimConfig(N=104, D=52, latent="data", latent_data=str(out),
                            standardize="whiten", steps=2000, records=3, test_size=200)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5")
    assert run.status == ["ok"] and run.config.latent_data_sha256 == content_hash(X)


def test_patch_size_and_stride():
    import pywt.data
    X = make_latents("patches", patch_size=8, patch_stride=8)
    every = np.concatenate([image_patches(img / 255.0, 8, 8)
                            for img in (pywt.data.ascent(), pywt.data.camera())])
    flat = every.max(axis=1) == every.min(axis=1)
    np.testing.assert_array_equal(X, every[~flat])
    assert X.shape[1] == 64 and every.shape[0] == 2 * 64 * 64
    assert make_latents("patches", patch_size=5).shape[1] == 25      # stride 2 by default
    for size, stride, words in [(1, None, "patch size must be"), (65, None, "patch size must"),
                                (8, 9, "patch stride must be an integer in [1, 8]"),
                                (8, 0, "patch stride")]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            make_latents("patches", patch_size=size, patch_stride=stride)


def test_patch_options_on_the_command_line(tmp_path):
    ok = CliRunner().invoke(cli, ["latents", "patches", "--patch-size", "4", "--patch-stride",
                                  "4", "--out", str(tmp_path / "p.npy")])
    assert ok.exit_code == 0 and "shape (" in ok.output and ", 16), sha256" in ok.output
    bad = CliRunner().invoke(cli, ["latents", "patches", "--patch-size", "99", "--out",
                                   str(tmp_path / "q.npy")])
    assert bad.exit_code == 2 and "patch size must be" in bad.output
    assert not (tmp_path / "q.npy").exists()
    digits = CliRunner().invoke(cli, ["latents", "digits", "--patch-size", "4", "--out",
                                      str(tmp_path / "d.npy")])
    assert digits.exit_code == 2 and "for patches only" in digits.output
