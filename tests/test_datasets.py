"""Tests for reference_models.data: small, offline, fast (synthetic archives and folders in tmp_path)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import pickletools
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

from reference_models.data import DATASETS, DatasetError, ImageDataset, cifar, load_dataset
from reference_models.data.download import check_md5, fetch


def _check_common(ds: ImageDataset, image_size: int = 32) -> None:
    for x, y in ((ds.train_x, ds.train_y), (ds.val_x, ds.val_y)):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.ndim == 4 and x.shape[1] == 3 and x.shape[2:] == (image_size, image_size)
        assert len(x) == len(y)
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes
    assert ds.channels == 3 and ds.image_size == image_size
    assert len(ds.mean) == 3 and len(ds.std) == 3
    expected = ds.train_x.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(ds.mean, dtype=torch.float64), expected, atol=1e-6)


def _raw_knn(ds: ImageDataset) -> float:
    xt = ds.train_x.reshape(len(ds.train_x), -1).float().numpy()
    xv = ds.val_x.reshape(len(ds.val_x), -1).float().numpy()
    knn = KNeighborsClassifier(n_neighbors=20, metric="cosine").fit(xt, ds.train_y.numpy())
    return float(knn.score(xv, ds.val_y.numpy()))


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- registry


def test_unknown_name_lists_valid_names():
    with pytest.raises(DatasetError) as ei:
        load_dataset("mnist")
    msg = _one_line_error(ei)
    assert "mnist" in msg
    for name in DATASETS:
        assert name in msg


def test_dataset_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


@pytest.mark.parametrize("kwargs", [{"val_fraction": 0.0}, {"val_fraction": 1.0}, {"n_train": 0}, {"image_size": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(DatasetError):
        load_dataset("digits", **kwargs)


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_types():
    ds = load_dataset("digits")
    _check_common(ds)
    assert ds.name == "digits" and ds.num_classes == 10
    assert len(ds.train_x) + len(ds.val_x) == 1797
    assert len(ds.val_x) == pytest.approx(0.2 * 1797, abs=1)
    assert set(ds.train_y.tolist()) == set(range(10)) == set(ds.val_y.tolist())
    # Grayscale replicated: all three channels equal.
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 1]) and torch.equal(ds.train_x[:, 0], ds.train_x[:, 2])
    assert int(ds.train_x.max()) > 200  # scaled from 0..16 to 0..255
    assert ds.factors is None


def test_digits_split_deterministic():
    a, b, c = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.val_x, c.val_x)


def test_digits_image_size_and_caps():
    ds = load_dataset("digits", image_size=16, n_train=100, n_val=30, seed=3)
    _check_common(ds, image_size=16)
    assert len(ds.train_x) == 100 and len(ds.val_x) == 30
    assert set(ds.train_y.tolist()) == set(range(10))  # caps stay class-balanced
    again = load_dataset("digits", image_size=16, n_train=100, n_val=30, seed=3)
    assert torch.equal(ds.train_x, again.train_x)
    big = load_dataset("digits", n_train=10_000)  # a cap larger than the data is no cap
    assert len(big.train_x) == 1437


# ---------------------------------------------------------------- shapes


def test_shapes_deterministic_and_factors():
    a = load_dataset("shapes", n_train=300, n_val=100, seed=0)
    b = load_dataset("shapes", n_train=300, n_val=100, seed=0)
    c = load_dataset("shapes", n_train=300, n_val=100, seed=1)
    _check_common(a)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.num_classes >= 6
    assert set(a.train_y.tolist()) == set(range(a.num_classes)) == set(a.val_y.tolist())
    assert a.factors is not None
    for split, n in (("train", 300), ("val", 100)):
        f = a.factors
        assert f[f"{split}/colour"].shape == (n, 3)
        assert f[f"{split}/position"].shape == (n, 2)
        assert f[f"{split}/size"].shape == (n,)
        assert f[f"{split}/background"].shape == (n, 3)
        assert torch.equal(f[f"{split}/colour"], b.factors[f"{split}/colour"])


def test_shapes_other_size():
    ds = load_dataset("shapes", n_train=20, n_val=10, image_size=48)
    _check_common(ds, image_size=48)


def test_shapes_raw_pixel_knn_is_weak():
    ds = load_dataset("shapes", n_train=1500, n_val=500, seed=0)
    acc = _raw_knn(ds)
    assert acc < 0.5, acc
    assert acc > 1.0 / ds.num_classes - 0.05  # sanity: labels are not scrambled into noise below chance


# ---------------------------------------------------------------- scenes


def test_scenes_deterministic_balanced_with_factors():
    a = load_dataset("scenes", n_train=400, n_val=200, seed=0)
    b = load_dataset("scenes", n_train=400, n_val=200, seed=0)
    c = load_dataset("scenes", n_train=400, n_val=200, seed=1)
    _check_common(a)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.num_classes == 10
    for y, n in ((a.train_y, 400), (a.val_y, 200)):          # balanced: every class n / 10 times
        assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10
    from reference_models.data import scenes

    for split, n in (("train", 400), ("val", 200)):
        pos, size = a.factors[f"{split}/position"], a.factors[f"{split}/size"]
        assert pos.shape == (n, 2) and size.shape == (n,) and a.factors[f"{split}/rotation"].shape == (n,)
        lo, hi = scenes.SCALE_RANGE
        assert float(size.min()) >= lo and float(size.max()) <= hi
        assert bool((pos.abs() <= (1 - size)[:, None] + 1e-6).all())   # the digit stays inside the frame
        assert float(pos.std()) > 0.1                                    # and it moves


def test_scenes_validation_digits_are_other_images_than_training_ones():
    from sklearn.datasets import load_digits

    from reference_models.data.splits import stratified_split

    labels = load_digits().target
    tr, va = stratified_split("scenes", labels, 0.2, 0)
    assert not set(tr.tolist()) & set(va.tolist()) and len(tr) + len(va) == len(labels)


def test_scenes_hide_the_class_from_raw_pixels():
    """Pixels' kNN on the scenes is far below the centred digits': the placement is the nuisance."""
    scenes_acc = _raw_knn(load_dataset("scenes", n_train=2000, n_val=500, seed=0))
    digits_acc = _raw_knn(load_dataset("digits", seed=0))
    assert digits_acc > 0.9 and scenes_acc < digits_acc - 0.2, (scenes_acc, digits_acc)
    assert scenes_acc > 0.15        # still above chance: the class is there to be learned


# ---------------------------------------------------------------- cifar


def _cifar_images(n: int, start_label: int, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """n images, 3072 bytes each; image 0 is pure red, image 1 has green = row index."""
    data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    data[0, 0] = 255
    data[1, 1] = np.arange(32, dtype=np.uint8)[:, None] * 8  # varies down the rows only
    data[2:] = np.random.default_rng(start_label).integers(0, 256, (n - 2, 3, 32, 32), dtype=np.uint8)
    labels = [(start_label + i) % num_classes for i in range(n)]
    return data.reshape(n, 3072), labels


def _dump(path, data, labels, label_key: bytes) -> None:
    batch = {b"batch_label": b"test", b"data": data, label_key: labels, b"filenames": [b"x"] * len(labels)}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [l % 20 for l in labels]
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)


def _make_cifar10(root, per_batch: int = 6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", *_cifar_images(per_batch, i, 10), b"labels")
    _dump(folder / "test_batch", *_cifar_images(per_batch, 0, 10), b"labels")
    return folder


def _make_cifar100(root, n: int = 24):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    _dump(folder / "train", *_cifar_images(n, 0, 100), b"fine_labels")
    _dump(folder / "test", *_cifar_images(n // 2, 50, 100), b"fine_labels")
    return folder


def _check_planted_pixels(x: torch.Tensor) -> None:
    red = x[0]
    assert (red[0] == 255).all() and (red[1] == 0).all() and (red[2] == 0).all()
    ramp = x[1]
    assert (ramp[0] == 0).all() and (ramp[2] == 0).all()
    assert torch.equal(ramp[1, :, 0], torch.arange(32, dtype=torch.uint8) * 8)  # rows, not columns
    assert (ramp[1] == ramp[1, :, :1]).all()


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar10_loads(tmp_path, point_at_folder):
    folder = _make_cifar10(tmp_path)
    ds = load_dataset("cifar10", path=str(folder if point_at_folder else tmp_path))
    _check_common(ds)
    assert ds.num_classes == 10 and len(ds.train_x) == 30 and len(ds.val_x) == 6
    _check_planted_pixels(ds.train_x)  # first image of data_batch_1
    _check_planted_pixels(ds.val_x)
    assert ds.train_y[:6].tolist() == [1, 2, 3, 4, 5, 6]


def test_cifar100_loads_fine_labels(tmp_path):
    folder = _make_cifar100(tmp_path)
    for path in (tmp_path, folder):
        ds = load_dataset("cifar100", path=str(path))
        _check_common(ds)
        assert ds.num_classes == 100 and len(ds.train_x) == 24 and len(ds.val_x) == 12
        assert ds.train_y.tolist() == list(range(24))
        assert ds.val_y.tolist() == list(range(50, 62))
        _check_planted_pixels(ds.train_x)


def test_cifar_caps_and_resize(tmp_path):
    _make_cifar10(tmp_path, per_batch=10)
    ds = load_dataset("cifar10", path=str(tmp_path), n_train=20, n_val=5, image_size=16, seed=4)
    _check_common(ds, image_size=16)
    assert len(ds.train_x) == 20 and len(ds.val_x) == 5
    assert set(ds.train_y.tolist()) == set(range(10))


def test_cifar_missing_path_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as ei:
        load_dataset("cifar10", path=str(missing))
    msg = _one_line_error(ei)
    assert str(missing) in msg and "cifar-10-batches-py" in msg
    with pytest.raises(DatasetError) as ei:
        load_dataset("cifar100", path=str(tmp_path))
    assert str(tmp_path) in _one_line_error(ei)
    with pytest.raises(DatasetError):
        load_dataset("cifar10")  # no path at all


def test_cifar_incomplete_folder(tmp_path):
    folder = _make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError) as ei:
        load_dataset("cifar10", path=str(tmp_path))
    assert "data_batch_3" in _one_line_error(ei)


def test_cifar_archive_placed_by_hand_is_extracted(tmp_path):
    src = tmp_path / "src"
    _make_cifar10(src)
    dest = tmp_path / "data"
    dest.mkdir()
    with tarfile.open(dest / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", path=str(dest))
    assert len(ds.train_x) == 30
    assert (dest / "cifar-10-batches-py" / "test_batch").is_file()


def test_cifar_archive_escaping_member_rejected(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        payload = b"x"
        info = tarfile.TarInfo("../evil")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetError):
        load_dataset("cifar10", path=str(tmp_path))
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("name", ["/abs/evil", "a/../b"])
def test_cifar_archive_absolute_or_dotdot_member_rejected(tmp_path, name):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DatasetError) as ei:
        load_dataset("cifar10", path=str(tmp_path))
    assert "unsafe archive member" in _one_line_error(ei)
    assert not (tmp_path / "b").exists()


class _RunsShell:
    """What an attacker pickles: unpickling calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _RunsEval(_RunsShell):
    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


@pytest.mark.parametrize("payload, refused", [(_RunsShell, f"{os.system.__module__}.system"), (_RunsEval, "__builtin__.eval")])
@pytest.mark.parametrize("nested", [False, True])
def test_cifar_batch_naming_a_callable_is_refused_without_running_it(tmp_path, payload, refused, nested):
    folder = _make_cifar10(tmp_path / "data")
    marker = tmp_path / "pwned"
    evil = payload(f"touch {marker}")
    with open(folder / "data_batch_1", "wb") as fh:
        # Nested: the payload sits where a genuine batch keeps its labels, after globals a batch does hold.
        data, labels = _cifar_images(6, 1, 10)
        pickle.dump({b"data": data, b"labels": evil} if nested else evil, fh, protocol=2)
    with pytest.raises(DatasetError) as ei:
        load_dataset("cifar10", path=str(tmp_path / "data"))
    msg = _one_line_error(ei)
    assert not marker.exists()
    assert msg == f"cifar10: data.path: {folder / 'data_batch_1'} is not a CIFAR batch: it asks to load {refused}, which a CIFAR archive never holds"


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2's cPickle wrote str (BINSTRING), as the published CIFAR batches hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        op = pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256 else pickle.BINSTRING + len(raw).to_bytes(4, "little")
        self.write(op + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _py2_dump(path, obj) -> set[str]:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the archives) named its rebuilder numpy.core.multiarray; GLOBAL args are newline-ended text.
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(raw)
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


def test_cifar_batch_pickled_like_the_published_ones_loads(tmp_path):
    folder = _make_cifar10(tmp_path)
    data, labels = _cifar_images(6, 1, 10)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data, b"filenames": [b"a.png"] * 6}
    globals_ = _py2_dump(folder / "data_batch_1", batch)
    assert globals_ == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}  # as in the real data_batch_1
    ds = load_dataset("cifar10", path=str(tmp_path))
    _check_planted_pixels(ds.train_x)
    assert ds.train_y[:6].tolist() == [1, 2, 3, 4, 5, 6]


def test_check_md5_refuses_and_removes_a_wrong_file(tmp_path):
    good = tmp_path / "good.tar.gz"
    good.write_bytes(b"genuine bytes")
    check_md5("cifar10", good, hashlib.md5(b"genuine bytes").hexdigest())
    assert good.is_file()
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"not the archive")
    expected = cifar._LAYOUTS["cifar10"].md5
    with pytest.raises(DatasetError) as ei:
        check_md5("cifar10", bad, expected)
    msg = _one_line_error(ei)
    assert str(bad) in msg and expected in msg and hashlib.md5(b"not the archive").hexdigest() in msg
    assert not bad.exists()


def _cifar10_archive(tmp_path):
    src = tmp_path / "src"
    _make_cifar10(src)
    archive = tmp_path / "served.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def test_cifar_download_with_wrong_md5_is_removed_not_extracted(tmp_path, monkeypatch):
    served = _cifar10_archive(tmp_path)  # a loadable archive, just not the published one
    monkeypatch.setitem(cifar._LAYOUTS, "cifar10", dataclasses.replace(cifar._LAYOUTS["cifar10"], url=served.as_uri()))
    dest = tmp_path / "data"
    with pytest.raises(DatasetError) as ei:
        load_dataset("cifar10", path=str(dest), download=True)
    msg = _one_line_error(ei)
    assert cifar._LAYOUTS["cifar10"].md5 in msg and hashlib.md5(served.read_bytes()).hexdigest() in msg
    assert list(dest.iterdir()) == []  # neither the archive, nor a .part file, nor an extracted folder


def test_cifar_download_with_published_md5_is_extracted(tmp_path, monkeypatch):
    served = _cifar10_archive(tmp_path)
    lay = dataclasses.replace(cifar._LAYOUTS["cifar10"], url=served.as_uri(), md5=hashlib.md5(served.read_bytes()).hexdigest())
    monkeypatch.setitem(cifar._LAYOUTS, "cifar10", lay)
    ds = load_dataset("cifar10", path=str(tmp_path / "data"), download=True)
    assert len(ds.train_x) == 30
    assert (tmp_path / "data" / "cifar-10-python.tar.gz").is_file()


def test_fetch_requires_an_md5(tmp_path):
    with pytest.raises(TypeError):
        fetch("cifar10", (tmp_path / "x").as_uri(), tmp_path / "y")  # no archive is fetched unchecked


# ---------------------------------------------------------------- imagefolder

_COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _write_pngs(root, per_class: int) -> None:
    for name, rgb in _COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            # Non-square sizes exercise the centre crop.
            Image.new("RGB", (40 + 4 * i, 24), rgb).save(root / name / f"{i}.png")
    (root / "red" / "notes.txt").write_text("not an image")


def _check_colours(x: torch.Tensor, y: torch.Tensor) -> None:
    names = sorted(_COLOURS)  # labels follow sorted folder names
    for img, label in zip(x, y):
        expected = torch.tensor(_COLOURS[names[int(label)]], dtype=torch.uint8)
        assert torch.equal(img[:, 5, 5], expected)


def test_imagefolder_split_by_fraction(tmp_path):
    _write_pngs(tmp_path, per_class=5)
    ds = load_dataset("imagefolder", path=str(tmp_path), image_size=16, val_fraction=0.4)
    _check_common(ds, image_size=16)
    assert ds.num_classes == 3 and len(ds.train_x) == 9 and len(ds.val_x) == 6
    assert ds.val_y.bincount().tolist() == [2, 2, 2]
    _check_colours(ds.train_x, ds.train_y)
    _check_colours(ds.val_x, ds.val_y)
    again = load_dataset("imagefolder", path=str(tmp_path), image_size=16, val_fraction=0.4)
    assert torch.equal(ds.val_y, again.val_y) and torch.equal(ds.val_x, again.val_x)


def test_imagefolder_train_val_folders_and_caps(tmp_path):
    _write_pngs(tmp_path / "train", per_class=4)
    _write_pngs(tmp_path / "val", per_class=2)
    ds = load_dataset("imagefolder", path=str(tmp_path))
    _check_common(ds)
    assert len(ds.train_x) == 12 and len(ds.val_x) == 6
    _check_colours(ds.train_x, ds.train_y)
    _check_colours(ds.val_x, ds.val_y)
    capped = load_dataset("imagefolder", path=str(tmp_path), n_train=6, n_val=3)
    assert len(capped.train_x) == 6 and len(capped.val_x) == 3
    assert capped.train_y.bincount().tolist() == [2, 2, 2]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError) as ei:
        load_dataset("imagefolder", path=str(tmp_path))  # empty folder
    assert str(tmp_path) in _one_line_error(ei)
    (tmp_path / "cls").mkdir()
    with pytest.raises(DatasetError):
        load_dataset("imagefolder", path=str(tmp_path))  # class folder without images
    with pytest.raises(DatasetError) as ei:
        load_dataset("imagefolder", path=str(tmp_path / "absent"))
    assert "absent" in _one_line_error(ei)
    with pytest.raises(DatasetError):
        load_dataset("imagefolder")


def test_colour_cast_scales_each_image_by_its_own_channel_factors():
    from reference_models.data.corrupt import colour_cast, with_colour_cast

    x = torch.full((50, 3, 4, 4), 200, dtype=torch.uint8)
    assert colour_cast(x, 0.0, seed=0) is x
    y = colour_cast(x, 0.5, seed=0).float() / 200
    # one factor per image and channel, constant over pixels, within [1 - strength, 1]
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y), atol=1 / 200)
    assert y.min() >= 0.5 - 1 / 200 and y.max() <= 1.0
    assert y[:, :, 0, 0].std(dim=0).min() > 0.05          # images differ: the cast identifies them
    assert torch.equal(colour_cast(x, 0.5, seed=0), colour_cast(x, 0.5, seed=0))
    data = with_colour_cast(load_dataset("digits", n_train=64, n_val=32), 0.8, seed=0)
    assert data.train_x.dtype == torch.uint8 and data.mean[0] < 0.25   # statistics follow the darkened images
