"""`objcrop probe` end to end on a fixture where the train and the test set must score differently.

Images are reddish or bluish noise, their class is their colour. Image i of the training set has the
other colour than image i of the test set, so the test labels in file order are the training labels
inverted: a probe that scored the training features (or the training labels) where it should score the
test set would rank every test image backwards.
"""
import json

import numpy as np
import pytest
from PIL import Image

from objcrop.cli import run_stage_main
from objcrop.pretrain import probe
from objcrop.records import read_results

N, SIZE = 24, 32
CLASSES = ["red", "blue"]


def _images(folder, colours, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    names = []
    for i, colour in enumerate(colours):
        pixels = rng.integers(0, 40, (SIZE, SIZE, 3))
        pixels[..., 0 if colour == 0 else 2] += 200  # red or blue channel raised
        names.append(f"{i:03d}.png")
        Image.fromarray(pixels.astype(np.uint8)).save(folder / names[-1])
    return names


def _coco(path, names, labels):
    """A COCO json in this image order, one whole-image box per image with its label."""
    data = {"images": [{"id": i + 1, "file_name": n, "height": SIZE, "width": SIZE} for i, n in enumerate(names)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": int(c) + 1, "bbox": [0, 0, SIZE, SIZE],
                             "area": SIZE * SIZE, "iscrowd": 0} for i, c in enumerate(labels)],
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]}
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def split_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    train_colours = np.arange(N) % 2
    test_colours = 1 - train_colours  # image i of the test set has the other colour than image i of train
    train = _images(root / "train", train_colours, seed=1)
    test = _images(root / "test", test_colours, seed=2)
    return {"train": f"coco:{_coco(root / 'train.json', train, train_colours)}:{root / 'train'}",
            "test": f"coco:{_coco(root / 'test.json', test, test_colours)}:{root / 'test'}",
            "test_swapped": f"coco:{_coco(root / 'test_swapped.json', test, 1 - test_colours)}:{root / 'test'}"}


def _probe(data, test, tmp_path):
    out = tmp_path / test
    argv = ["--weights", "random", "--arch", "resnet18", "--dataset-train", data["train"], "--dataset-test",
            data[test], "--out", str(out), "--image-size", str(SIZE), "--epochs", "30", "--num-workers", "0",
            "--cache-dir", str(tmp_path / "cache"), "--opts", "KNN.K", "5"]
    assert run_stage_main(probe.main, argv, "objcrop probe") == 0
    return read_results(str(out / "results.json"))


def test_probe_cli_scores_the_test_set_not_the_training_set(split_data, tmp_path, one_torch_thread):
    """Guards against the probe's split in the CLI: features of the training images, or the training
    labels, scored in place of the test set's (this fixture's test labels are the training labels
    inverted, so either mistake ranks the test set backwards, far below 0.5), and against a probe that
    ignores the test labels (the same test images with their labels swapped must score low)."""
    right = _probe(split_data, "test", tmp_path)
    swapped = _probe(split_data, "test_swapped", tmp_path)
    assert right["num_train"] == right["num_test"] == N
    assert right["mAP"] > 0.95 and right["knn_mAP"] > 0.95
    # every test image ranked backwards: AP of the worst ranking (0.5 where the kNN vote ties a class's
    # positives at one score; about 0.33 for the classifier's strict ranking)
    assert swapped["mAP"] < 0.5 and swapped["knn_mAP"] <= 0.5
    assert right["top1"] > 0.9 and swapped["top1"] < 0.1
