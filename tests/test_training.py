"""The whole training pipeline on a tiny synthetic data set: loaders, patient split, bad rows,
training, export, loading the bundle back, and evaluation."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.bundle import ModelBundle, artifact_version
from cxr.errors import ModelBundleError
from cxr.gate_statistics import GATE_FILE
from tests.helpers import csv_rows
from training import evaluate, train
from training.checkpoint import CHECKPOINT_DIR, PROGRESS_FILE
from training.data import DataError, canonical_label, load_dataset, patient_split
from training.precision import training_policy

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # trains and evaluates small networks

TINY = ["--input-size", "32", "--base-filters", "4", "--blocks", "2", "--epochs", "1", "--no-cache"]


def synthetic_xray(label: str, rng: np.random.Generator, size: int = 160) -> Image.Image:
    """A chest-like film: a bright body with two dark lung fields; 'covid' adds hazy patches. Each film's
    build (body and lung sizes and places) is drawn from `rng`, so that no two films are copies of one
    another to the leak guard's perceptual hash (`training.leaks`)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    width, height, top = rng.uniform(0.36, 0.48), rng.uniform(0.42, 0.56), rng.uniform(0.5, 0.6)
    body = np.exp(-((((xx - 0.5) / width) ** 2 + ((yy - top) / height) ** 2) ** 2))
    spread, centre, lung_w, lung_h = rng.uniform(0.14, 0.22), rng.uniform(0.42, 0.58), *rng.uniform(0.1, 0.16, 2)
    lungs = sum(
        np.exp(-(((xx - 0.5 - side * spread) / lung_w) ** 2 + ((yy - centre) / (lung_h * 2)) ** 2)) for side in (-1, 1)
    )
    image = 0.15 + 0.7 * body - 0.45 * lungs
    if label == "covid":
        image += 0.35 * lungs * (rng.random((size, size)) > 0.5)
    elif label == "viral_pneumonia":
        image += 0.3 * np.exp(-(((xx - 0.3) / 0.08) ** 2 + ((yy - 0.6) / 0.08) ** 2))
    image += rng.normal(0, 0.03, image.shape)
    return Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8), mode="L")


def write_manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "patient_id", "view", "notes"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """36 images per class in a manifest with extra columns; patients have 1-3 images, some none."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = []
    for label in ("covid", "normal", "viral_pneumonia"):
        for i in range(36):
            name = f"{label[:5]}src_{i:04d}.png"
            synthetic_xray(label, rng).save(root / name)
            patient = f"{label}:{i // 3}" if i < 24 else ""
            rows.append({"file": name, "label": label, "patient_id": patient, "view": "PA", "notes": "synthetic"})
    return write_manifest(root, rows)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    assert train.main(["--data", str(dataset), "--out", str(out), *TINY]) == 0
    return out


def test_labels_are_spelled_as_in_the_radiography_database():
    assert [canonical_label(x) for x in ("COVID", "Normal", "Viral Pneumonia", "Lung_Opacity", "COVID-19")] == [
        "covid",
        "normal",
        "viral_pneumonia",
        "lung_opacity",
        "covid",
    ]


def test_split_keeps_patients_together_and_is_stratified(dataset):
    samples, excluded = load_dataset(dataset)
    assert excluded == {"viral_pneumonia": 36}
    split = patient_split(samples, (0.7, 0.2, 0.1), seed=1)
    assert sorted(sum(split.values(), [])) == list(range(len(samples)))
    owner = {}
    for name, indices in split.items():
        for i in indices:
            assert owner.setdefault(samples[i].patient, name) == name, "a patient is in two splits"
    for name, fraction in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        labels = [samples[i].label for i in split[name]]
        assert abs(len(labels) / len(samples) - fraction) < 0.1
        assert set(labels) == {"covid", "normal"}
    assert split == patient_split(samples, (0.7, 0.2, 0.1), seed=1), "the split must be reproducible"


def test_folder_tree_in_both_layouts(tmp_path):
    rng = np.random.default_rng(1)
    for folder in ("COVID/images", "Normal/images", "Viral Pneumonia/images", "Lung_Opacity"):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(2):
            synthetic_xray("normal", rng).save(tmp_path / folder / f"img-{i}.png")
    samples, excluded = load_dataset(tmp_path)
    assert sorted({s.label for s in samples}) == ["covid", "normal"]
    assert excluded == {"viral_pneumonia": 2, "lung_opacity": 2}
    assert all(s.path.is_file() for s in samples)
    samples, _ = load_dataset(tmp_path, ["covid", "normal", "viral_pneumonia", "lung_opacity"])
    assert len(samples) == 8 and len({s.patient for s in samples}) == 8


def test_exported_bundle_loads_and_predicts(trained, dataset):
    card = json.loads((trained / "model_card.json").read_text())
    assert card["version"] == artifact_version(trained)
    assert card["classes"] == ["covid", "normal"] and card["input_size"] == 32
    for split in ("val", "test"):
        assert {"cnn", "decision_tree", "svm", "random_forest", "adaboost", "ensemble"} <= set(card["metrics"][split])
        assert 0.0 <= card["metrics"][split]["ensemble"]["ece"] <= 1.0
    assert 0.0 <= card["threshold"]["value"] <= 1.0
    assert all(
        (trained / "report" / f"{name}.png").is_file() for name in ("training_curves", "confusion_matrix", "roc")
    )
    saved = csv_rows(trained / "split.csv")
    patients = {}
    for row in saved:
        assert patients.setdefault(row["patient_id"], row["split"]) == row["split"]

    gate = json.loads((trained / GATE_FILE).read_text())
    assert card["gate"]["films"] == gate["films"] == card["data"]["train"]["total"]
    assert np.asarray(gate["mean_chest"]).shape == (8, 8)
    bundle = ModelBundle(trained)
    assert bundle.gate.max_edge_strength == gate["max_edge_strength"]
    image = np.asarray(Image.open(dataset.parent / "covidsrc_0001.png"), dtype=np.float32) / 255.0
    prediction = bundle.predict(image)
    assert prediction.label in ("covid", "normal")
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert sum(prediction.cnn_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.features.shape == (64,)
    assert prediction.heatmap.ndim == 2 and np.isfinite(prediction.heatmap).all()
    assert prediction.heatmap.min() >= 0.0 and prediction.heatmap.max() <= 1.0 + 1e-6


def test_a_bundle_without_gate_limits_names_the_training_command(trained, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained, copy)
    (copy / GATE_FILE).unlink()
    with pytest.raises(ModelBundleError, match="python -m training.train"):
        ModelBundle.verify(copy)
    (copy / GATE_FILE).write_text((trained / GATE_FILE).read_text().replace('"films": ', '"films": 1'))
    with pytest.raises(ModelBundleError, match="do not match"):
        ModelBundle.verify(copy)  # the limits are part of the model's version


def test_copies_of_one_film_share_a_split_and_copies_of_held_out_films_are_left_out(dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(dataset.parent, root)
    shutil.copyfile(root / "covidsrc_0030.png", root / "covidsrc_0999.png")  # the same file under two names
    Image.open(root / "normasrc_0031.png").resize((200, 200)).save(root / "heldsrc_0001.jpg", quality=85)
    with (root / "manifest.csv").open("a", newline="") as handle:
        csv.writer(handle).writerows(
            [["covidsrc_0999.png", "covid", "", "PA", "copy"], ["heldsrc_0001.jpg", "normal", "", "PA", "copy"]]
        )
    out = tmp_path / "model"
    argv = ["--data", str(root / "manifest.csv"), "--out", str(out), "--holdout-sources", "heldsrc"]
    assert train.main([*argv, *TINY]) == 0
    where = {row["file"]: row["split"] for row in csv_rows(out / "split.csv")}
    assert where["covidsrc_0030.png"] == where["covidsrc_0999.png"] and where["heldsrc_0001.jpg"] == "unseen"
    assert "normasrc_0031.png" not in where
    card = json.loads((out / "model_card.json").read_text())
    assert [pair[:2] for pair in card["data"]["copies_of_one_film"]] == [
        ["covidsrc_0030.png", "covidsrc_0999.png"],
        ["normasrc_0031.png", "heldsrc_0001.jpg"],
    ]
    assert card["data"]["left_out_as_copies_of_held_out_films"] == 1


def test_evaluate_writes_metrics_and_predictions(trained, dataset, tmp_path, capsys):
    out, preds = tmp_path / "metrics.json", tmp_path / "preds.csv"
    argv = ["--model", str(trained), "--data", str(dataset), "--out", str(out), "--predictions", str(preds)]
    assert evaluate.main(argv) == 0
    assert "Ensemble (operating threshold)" in capsys.readouterr().out
    metrics = json.loads(out.read_text())
    # viral pneumonia was trained as the non-COVID class (the default --negatives), so it is scored as such
    assert metrics["n"] == 108 and metrics["left_out_by_class"] == {}
    assert metrics["outcomes"]["all"]["n_other_findings"] == 36
    rows = csv_rows(preds)
    assert list(rows[0]) == ["file", "label", "decision", "p_covid", "p_normal", "class", "source"]
    assert len(rows) == 108
    assert {r["decision"] for r in rows} <= {"covid", "normal", "indeterminate"}
    assert all(r["class"] == "covid" for r in rows if r["decision"] == "covid")
    assert all(abs(float(r["p_covid"]) + float(r["p_normal"]) - 1) < 1e-4 for r in rows)
    assert evaluate.main([*argv[:4], "--split", "test"]) == 0


def test_evaluate_accepts_folder_spelling_and_fails_on_unreadable_data(trained, tmp_path):
    rng = np.random.default_rng(2)
    for folder in ("COVID/images", "Normal/images"):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(3):
            synthetic_xray(folder.split("/")[0].lower(), rng).save(tmp_path / folder / f"x{i}.png")
    assert evaluate.main(["--model", str(trained), "--data", str(tmp_path)]) == 0
    (tmp_path / "Normal/images/broken.png").write_bytes(b"not a png")
    assert evaluate.main(["--model", str(trained), "--data", str(tmp_path)]) == 2
    assert evaluate.main(["--model", str(trained), "--data", str(tmp_path / "missing.csv")]) == 2


@pytest.mark.parametrize(
    "row, message",
    [
        ({"file": "nowhere.png", "label": "covid"}, "line 3 (nowhere.png): the file cannot be read"),
        ({"file": "broken.png", "label": "normal"}, "line 3 (broken.png): the image cannot be used"),
        ({"file": "good.png", "label": "covd"}, "line 3 (good.png): unknown label 'covd'"),
    ],
)
def test_bad_rows_are_named_or_skipped(tmp_path, capsys, row, message):
    rng = np.random.default_rng(3)
    synthetic_xray("normal", rng).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    manifest = write_manifest(tmp_path, [{"file": "good.png", "label": "normal"}, row])
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from training.images import load_images

        samples, _ = load_dataset(manifest)
        load_images(samples, 32)
    assert train.main(["--data", str(manifest), "--out", str(tmp_path / "m"), *TINY]) == 2
    assert message.split(": ", 1)[1] in capsys.readouterr().err


def test_skip_bad_leaves_bad_rows_out_with_a_count(dataset, tmp_path, capsys):
    rows = csv_rows(dataset)
    for row in rows:
        row["file"] = str(dataset.parent / row["file"])
    rows.append({"file": str(tmp_path / "gone.png"), "label": "covid", "patient_id": "", "view": "", "notes": ""})
    manifest = write_manifest(tmp_path, rows)
    from training.images import load_images

    samples, _ = load_dataset(manifest)
    images, kept = load_images(samples, 32, skip_bad=True)
    assert len(kept) == len(samples) - 1 == images.shape[0]
    assert "skipped 1 bad row(s)" in capsys.readouterr().out


def test_three_class_model_trains_and_serves(dataset, tmp_path):
    out = tmp_path / "model3"
    assert (
        train.main(["--data", str(dataset), "--out", str(out), "--classes", "covid,normal,viral_pneumonia", *TINY]) == 0
    )
    bundle = ModelBundle(out)
    assert bundle.classes == ["covid", "normal", "viral_pneumonia"]
    image = np.asarray(Image.open(dataset.parent / "viralsrc_0000.png"), dtype=np.float32) / 255.0
    prediction = bundle.predict(image)
    assert len(prediction.probabilities) == 3
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)


def test_fine_tuning_starts_from_a_model_on_the_same_split(trained, dataset, tmp_path, capsys):
    import json

    out = tmp_path / "tuned"
    assert train.main(["--data", str(dataset), "--out", str(out), "--init-from", str(trained), *TINY]) == 0
    assert "CNN weights taken from" in capsys.readouterr().out
    start, card = (json.loads((d / "model_card.json").read_text()) for d in (trained, out))
    assert card["training"]["init_from"] == {
        "version": start["version"],
        "epochs": 1,
        "learning_rate": 0.001,
        "init_from": None,
    }
    assert (out / "split.csv").read_text() == (trained / "split.csv").read_text()
    ModelBundle(out)  # loads, and its card matches its files
    # Another split (another seed) could put the first model's training images into this test split.
    assert (
        train.main(
            ["--data", str(dataset), "--out", str(tmp_path / "x"), "--init-from", str(trained), "--seed", "7", *TINY]
        )
        == 2
    )
    assert "split differs" in capsys.readouterr().err


def test_held_out_sources_are_scored_apart_and_unknown_ones_refused(dataset, tmp_path, capsys):
    out = tmp_path / "held"
    assert train.main(["--data", str(dataset), "--out", str(out), "--holdout-sources", "viralsrc", *TINY]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["holdout_sources"] == ["viralsrc"]
    assert card["data"]["unseen"]["per_source"] == {"viralsrc": 36}
    assert "viralsrc" not in card["data"]["train"]["per_source"] and "viralsrc" not in card["data"]["val"]["per_source"]
    unseen = card["outcomes"]["unseen"]["viralsrc"]
    assert unseen["n_other_findings"] == 36 and unseen["sensitivity"] is None
    assert 0.0 <= unseen["other_findings_not_called_covid"] <= 1.0
    assert {row["split"] for row in csv_rows(out / "split.csv") if row["file"].startswith("viral")} == {"unseen"}
    assert (
        card["calibration"]["temperature"] > 0
        and card["threshold"]["indeterminate_below"] <= card["threshold"]["value"]
    )
    assert (
        train.main(["--data", str(dataset), "--out", str(tmp_path / "x"), "--holdout-sources", "nowhere", *TINY]) == 2
    )
    assert "nowhere" in capsys.readouterr().err


def test_lung_localiser_trains_and_a_lung_crop_model_serves(dataset, tmp_path):
    from training import lungs

    masks = tmp_path / "lungs" / "masks"
    masks.mkdir(parents=True)
    for row in csv_rows(dataset)[:12]:
        mask = np.zeros((160, 160), dtype=np.uint8)
        mask[40:125, 25:135] = 255  # both lung fields of `synthetic_xray`
        Image.fromarray(mask).save(masks / row["file"])
    localiser = tmp_path / "lungs.keras"
    assert (
        lungs.main(
            ["--lungs", str(masks.parent), "--images", str(dataset.parent), "--out", str(localiser), "--epochs", "2"]
        )
        == 0
    )
    out = tmp_path / "cropped"
    assert train.main(["--data", str(dataset), "--out", str(out), "--lung-localiser", str(localiser), *TINY]) == 0
    assert (out / "lungs.keras").is_file()
    bundle = ModelBundle(out)
    assert bundle.card["lung_crop"]["file"] == "lungs.keras" and bundle.localiser is not None
    image = np.asarray(Image.open(dataset.parent / "covidsrc_0002.png"), dtype=np.float32) / 255.0
    prediction = bundle.predict(image)
    top, bottom, left, right = prediction.box
    assert 0 <= top < bottom <= 160 and 0 <= left < right <= 160
    (out / "lungs.keras").write_bytes(b"changed")  # the localiser is part of the hashed artifacts
    with pytest.raises(Exception, match="do not match"):
        ModelBundle(out)


def test_precision_is_float32_unless_the_cpu_computes_bfloat16(tmp_path):
    plain, native = tmp_path / "plain", tmp_path / "native"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n")
    native.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n")
    assert train.parse_args(["--data", "d", "--out", "o"]).precision == "auto"
    assert training_policy("auto", plain) == "float32"
    assert training_policy("auto", native) == "mixed_bfloat16"
    assert training_policy("auto", tmp_path / "missing") == "float32"
    assert training_policy("float32", native) == "float32" and training_policy("bfloat16", plain) == "mixed_bfloat16"


def test_a_bfloat16_run_exports_a_float32_network(dataset, tmp_path):
    out = tmp_path / "bf16"
    assert train.main(["--data", str(dataset), "--out", str(out), "--precision", "bfloat16", *TINY]) == 0
    assert json.loads((out / "model_card.json").read_text())["training"]["policy"] == "mixed_bfloat16"
    bundle = ModelBundle(out)
    assert {layer.dtype_policy.name for layer in bundle.cnn.layers} == {"float32"}
    assert not (out / CHECKPOINT_DIR).exists(), "a finished run leaves no checkpoint"


def test_a_checkpoint_from_before_an_option_existed_resumes_with_its_default(tmp_path):
    saved = vars(train.parse_args(["--data", "manifest.csv", "--out", str(tmp_path), "--seed", "7"]))
    saved = {key: str(value) if isinstance(value, Path) else value for key, value in saved.items()}
    del saved["source_adversary"]  # an option this run's code did not have yet
    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / PROGRESS_FILE).write_text(json.dumps({"arguments": saved}))
    resumed = train.parse_args(["--resume", str(tmp_path)])
    assert resumed.source_adversary is False and resumed.seed == 7 and resumed.data == Path("manifest.csv")


def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_result(dataset, tmp_path, capsys):
    import keras

    cli = [sys.executable, "-m", "training.train"]
    common = [
        "--data",
        str(dataset),
        "--input-size",
        "32",
        "--base-filters",
        "4",
        "--blocks",
        "2",
        "--epochs",
        "5",
        "--warmup-epochs",
        "2",
        "--patience",
        "2",
        "--epoch-size",
        "128",
        "--no-cache",
        "--deterministic",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*cli, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
        )

    straight = run(*common, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    out = tmp_path / "stopped"
    stopped = subprocess.Popen(
        [*cli, *common, "--out", str(out)],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    for line in stopped.stdout:
        if line.startswith("epoch 1/5"):
            assert "images/s" in line and "ETA" in line
            stopped.send_signal(signal.SIGTERM)
            break
    rest, _ = stopped.communicate(timeout=120)
    assert stopped.returncode == train.RESUMABLE, rest[-3000:]
    assert f"--resume {out}" in rest
    done = json.loads((out / CHECKPOINT_DIR / PROGRESS_FILE).read_text())["progress"]["epochs_done"]
    assert 1 <= done < 5

    with pytest.raises(SystemExit) as conflict:  # refused while parsing: in this process, no third TF start
        train.main(["--resume", str(out), "--seed", "7"])
    assert conflict.value.code == 2 and "--seed 7 differs from the stopped run's 42" in capsys.readouterr().err
    resumed = run("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed after epoch {done}" in resumed.stdout
    assert not (out / CHECKPOINT_DIR).exists()
    expected, got = (
        keras.saving.load_model(d / "cnn.keras", compile=False).get_weights() for d in (tmp_path / "straight", out)
    )
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "straight" / "split.csv").read_text() == (out / "split.csv").read_text()


def test_gradient_reversal_is_the_identity_forward_and_turns_the_gradient_back_scaled():
    import tensorflow as tf

    from training.adversary import reversal_weight, reverse_gradient

    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = reverse_gradient(x, tf.constant(0.25))
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.25, -0.5, -0.75]])
    assert reversal_weight(0, 12) == 0.0
    assert 0.68 < reversal_weight(2, 12) < 0.69 and 0.98 < reversal_weight(6, 12) < reversal_weight(11, 12) < 1.0


def test_a_source_adversary_and_source_mixing_run_exports_the_cnn_alone(dataset, trained, tmp_path, capsys):
    from training.adversary import reversal_weight

    out = tmp_path / "adversary"
    arguments = [*["--data", str(dataset), "--out", str(out), *TINY, "--epochs", "2"], "--source-adversary"]
    arguments += ["--adversary-weight", "0.5", "--mix-sources"]
    assert train.main(arguments) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["source_adversary"] is True and card["training"]["adversary_weight"] == 0.5
    assert card["training"]["mix_sources"] is True
    epochs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(", source loss " in line for line in epochs), epochs
    # The reversed gradient rises by DANN's schedule towards --adversary-weight.
    assert "(reversal weight 0.000)" in epochs[0]
    assert f"(reversal weight {0.5 * reversal_weight(1, 2):.3f})" in epochs[1]
    adversarial, plain = ModelBundle(out), ModelBundle(trained)
    # The same network as a run without the adversary: its head is not part of the exported model.
    assert [layer.name for layer in adversarial.cnn.layers] == [layer.name for layer in plain.cnn.layers]
    assert adversarial.cnn.count_params() == plain.cnn.count_params()
