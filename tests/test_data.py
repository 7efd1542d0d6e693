import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforget.core.errors import DataError
from clipforget.data.images import read_folder
from clipforget.data.task import UnlearningTask
from clipforget.settings.folders import folder_task


def _image(path, size=(40, 30), color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_bad_files_are_skipped_and_reported(tmp_path):
    _image(tmp_path / "g" / "cat" / "a.png")
    _image(tmp_path / "g" / "dog" / "b.jpg")
    (tmp_path / "g" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "g" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    _image(tmp_path / "g" / "cat" / "huge.png", size=(300, 300))
    images = read_folder(tmp_path / "g", size=32, max_pixels=200 * 200)
    assert len(images) == 2 and images.images.shape == (2, 3, 32, 32)
    assert sorted(images.labels) == ["cat", "dog"]
    reasons = {p.split("/")[-1]: r for p, r in images.skipped}
    assert set(reasons) == {"notes.txt", "broken.jpg", "huge.png"}
    assert "not an image" in reasons["notes.txt"]
    assert "not a readable image" in reasons["broken.jpg"]
    assert "too large" in reasons["huge.png"]


def test_zip_gallery_and_unsafe_zip(tmp_path):
    _image(tmp_path / "src" / "x.png")
    archive = tmp_path / "gallery.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tmp_path / "src" / "x.png", "plane/x.png")
    images = read_folder(archive, size=16)
    assert len(images) == 1 and images.labels == ["plane"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", "x")
        zf.write(tmp_path / "src" / "x.png", "plane/kept.png")
    images = read_folder(evil, size=16)  # the unsafe member is skipped with its reason, the rest is read
    assert images.labels == ["plane"]
    assert ("evil.zip/../../escape.txt", "unsafe path in archive") in images.skipped
    assert not list(tmp_path.parent.glob("escape.txt")) and not list(tmp_path.glob("escape.txt"))
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"nope")
    with pytest.raises(DataError, match="not a valid zip"):
        read_folder(not_zip, size=16)


def test_empty_sets_and_missing_label_are_clear_errors(tmp_path):
    for i in range(3):
        _image(tmp_path / "forget" / f"{i}.png")
        _image(tmp_path / "retain" / "other" / f"{i}.png", color=(0, 0, 200))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "junk.txt").write_text("x")
    with pytest.raises(DataError, match="no readable images in the forget gallery"):
        folder_task(16, forget_dir=tmp_path / "empty", retain_dir=tmp_path / "retain", label="plane")
    with pytest.raises(DataError, match="no readable images in the retain gallery"):
        folder_task(16, forget_dir=tmp_path / "forget", retain_dir=tmp_path / "empty", label="plane")
    with pytest.raises(DataError, match="label text is required"):
        folder_task(16, forget_dir=tmp_path / "forget", retain_dir=tmp_path / "retain", label="  ")
    with pytest.raises(DataError, match="folder not found"):
        folder_task(16, forget_dir=tmp_path / "nowhere", retain_dir=tmp_path / "retain", label="plane")
    task, eval_sets = folder_task(16, forget_dir=tmp_path / "forget", retain_dir=tmp_path / "retain", label="plane")
    assert task.classnames == ["plane", "other"]
    assert len(task.forget) + len(task.calibration_forget) == 3 and len(task.calibration_forget) >= 1
    assert not set(task.forget.paths) & set(task.calibration_forget.paths)
    assert [s.role for s in eval_sets] == ["target", "retain"]


def test_task_validates_its_inputs(tmp_path):
    _image(tmp_path / "a" / "x.png")
    some = read_folder(tmp_path / "a", size=8, label="plane")
    none = some.subset(np.array([], dtype=int))
    with pytest.raises(DataError, match="forget set is empty"):
        UnlearningTask(none, some, ["plane", "x"])
    with pytest.raises(DataError, match="missing from the zero-shot classes"):
        UnlearningTask(some, some.relabel("ship"), ["plane", "car"])


def test_real_datasets_read_with_display_labels(has_data):
    from clipforget.data.coco import coco_mini
    from clipforget.data.monkeys10 import MARMOSETS, monkeys10
    from clipforget.data.tiny_imagenet import tiny_imagenet, tiny_imagenet_names

    val = monkeys10("val", 16)
    assert len(val) == 272 and set(MARMOSETS) <= set(val.labels) and len(set(val.labels)) == 10
    train = monkeys10("train", 16)
    reasons = {Path(p).name: r for p, r in train.skipped}
    assert reasons == {"n9151jpg": "not an image file type"}  # the wart in the data, reported, not fatal
    names = tiny_imagenet_names()
    assert len(names) == len(set(names)) == 202 and "lesser panda" in names
    tiny = tiny_imagenet("val", 16)
    assert len(tiny) == 10100 and set(tiny.labels) == set(names)
    coco = coco_mini(16)
    assert len(coco.images) == 159 and all(len(c) == 5 for c in coco.captions)


def test_reference_batches_are_unlabelled_images_or_none(cifar_small):
    from clipforget.data.task import UnlearningTask, reference_batches

    classes = sorted(set(cifar_small.labels))
    task = UnlearningTask(cifar_small.subset(range(4)), cifar_small.subset(range(4, 8)), classes)
    assert reference_batches(task, 4, np.random.default_rng(0), 3) is None
    task.reference = cifar_small.subset(range(8, 18))
    got = list(reference_batches(task, 4, np.random.default_rng(0), 3))
    assert len(got) == 3 and all(b.shape == (4, *cifar_small.images.shape[1:]) for b in got)
    assert all(b.dtype == torch.uint8 for b in got)


def test_tiny_imagenet_train_sample_equals_the_full_reader_per_class(tmp_path, has_data):
    """The reference images decode only the chosen zip members, and choose exactly what ``per_class`` would."""
    import shutil

    from clipforget.core.paths import data_root
    from clipforget.data.tiny_imagenet import tiny_imagenet, tiny_imagenet_train_sample

    (tmp_path / "breeds").mkdir()
    shutil.copy(data_root() / "breeds" / "imagenet-classes.json", tmp_path / "breeds")
    (tmp_path / "tiny-imagenet").mkdir()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(tmp_path / "tiny-imagenet" / "train.zip", "w") as zf:
        for wnid, count in (("n01443537", 5), ("n01629819", 2), ("n02123045", 7)):
            for i in range(count):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
                zf.writestr(f"{wnid}/{wnid}_{i}.JPEG", buf.getvalue())
        zf.writestr("n01443537/notes.txt", "not an image")
    full = tiny_imagenet("train", 16, tmp_path)
    for seed in (0, 1):
        sample = tiny_imagenet_train_sample(16, 3, seed, tmp_path)
        expected = full.per_class(3, seed)
        assert sample.paths == expected.paths and sample.labels == expected.labels
        assert torch.equal(sample.images, expected.images)
    assert len(sample) == 3 + 2 + 3
