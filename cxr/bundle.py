"""The model bundle: the Keras CNN, the joblib ensemble, the OOD statistics, the gate's limits and the model card,
loaded once per process. `ModelBundle.predict` runs one forward pass per image that yields the
64-d features, the CNN's own probabilities and the Grad-CAM maps for every class."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.calibration import apply_temperature
from cxr.decision import Rule, decide
from cxr.errors import ModelBundleError
from cxr.fast_ensemble import compile_ensemble, probe_features
from cxr.gate_statistics import GATE_FILE, GateLimits
from cxr.lungs import LUNG_FILE, LungLocaliser, crop_parameters, prepare
from cxr.ood import FeatureDistance
from cxr.preprocess import PARAMETERS

CNN_FILE = "cnn.keras"
ENSEMBLE_FILE = "ensemble.joblib"
OOD_FILE = "ood.npz"
CARD_FILE = "model_card.json"
# And LUNG_FILE, where the model has a lung crop. GATE_FILE: the gate's limits fitted on the training films.
HASHED_FILES = (CNN_FILE, ENSEMBLE_FILE, OOD_FILE, GATE_FILE)
TRAIN_COMMAND = "python -m training.train --data ../shared/data/cxr/manifest.csv --out models/"
RETRAIN_HINT = (
    f"Restore the shipped models/ folder (git checkout -- models) or train a new model with `{TRAIN_COMMAND}`."
)


def embed(cnn, feature_layer: str, tensors: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(64-d features, CNN probabilities) for a batch of preprocessed images, without Grad-CAM."""
    import keras

    model = keras.Model(cnn.inputs, [cnn.get_layer(feature_layer).output, cnn.outputs[0]])
    feats, probs = model.predict(np.asarray(tensors, dtype=np.float32), batch_size=batch_size, verbose=0)
    return feats, probs


def _head_only_gradcam(cnn, card: dict, signature: list, reference):
    """The same forward pass and Grad-CAM as `reference`, with the gradients taken through the head only.

    Between the Grad-CAM layer and the global average pooling there are only max-pooling and dropout
    layers, which route each pooled value's gradient to one element of the map; so the gradient of a
    class score w.r.t. the map sums, over the map, to its gradient w.r.t. the pooled vector, and the
    Grad-CAM channel weight (the mean over the map) is that gradient ÷ (h·w). Differentiating only
    Dense layers instead of back through the last block saves most of Grad-CAM's cost. Returns None
    (use `reference`) for any other architecture, or if the two disagree on test inputs.
    """
    import keras
    import tensorflow as tf

    names = [layer.name for layer in cnn.layers]
    start = names.index(card["gradcam_layer"])
    pooled = None
    for layer in cnn.layers[start + 1 :]:
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            pooled = layer
            break
        if not isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.Dropout)):
            return None
    if pooled is None:
        return None
    body = keras.Model(cnn.inputs, [cnn.get_layer(card["gradcam_layer"]).output, pooled.output])
    head = keras.Model(pooled.output, [cnn.get_layer(card["feature_layer"]).output, cnn.outputs[0]])
    n_classes = int(cnn.outputs[0].shape[-1])

    @tf.function(input_signature=signature)
    def forward(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        conv_maps, pooled_values = body(images, training=False)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(pooled_values)
            feats, probs = head(pooled_values, training=False)
            scores = [probs[:, k] for k in range(n_classes)]
        area = tf.cast(tf.shape(conv_maps)[1] * tf.shape(conv_maps)[2], tf.float32)
        weights = tf.stack([tape.gradient(s, pooled_values) for s in scores], axis=1) / area
        cams = tf.nn.relu(tf.einsum("nhwc,nkc->nkhw", conv_maps, weights))
        cams = cams / (tf.reduce_max(cams, axis=(2, 3), keepdims=True) + 1e-8)
        return feats, probs, cams

    size = int(cnn.inputs[0].shape[1])
    probe = np.random.default_rng(0).random((3, size, size, 1), dtype=np.float32)
    probe[2] = np.linspace(0.0, 1.0, size * size, dtype=np.float32).reshape(size, size, 1)
    for fast_out, ref_out in zip(forward(probe), reference(probe)):
        if not np.allclose(fast_out.numpy(), ref_out.numpy(), rtol=1e-4, atol=1e-4):
            return None
    return forward


def artifact_version(directory: Path) -> str:
    """Content hash of the model artifacts: the version written into and checked against the card."""
    digest = hashlib.sha256()
    for name in (*HASHED_FILES, LUNG_FILE):
        if name == LUNG_FILE and not (Path(directory) / name).is_file():
            continue  # a model without the lung crop
        digest.update(name.encode())
        digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ModelOutput:
    label: str
    probabilities: dict[str, float]  # the ensemble's (calibrated), which decide the label
    decision: str  # the label, or "indeterminate" where the rule withholds it (`cxr.decision.Rule`)
    indeterminate_reasons: tuple[str, ...]  # why it is indeterminate (`Rule.reasons`); empty otherwise
    cnn_probabilities: dict[str, float]
    threshold: float | None
    heatmap: np.ndarray  # Grad-CAM of the predicted class over the crop box, in [0, 1]
    box: tuple[int, int, int, int]  # (top, bottom, left, right) in the decoded image
    features: np.ndarray
    ood_score: float  # feature distance / its threshold: ≤ 1 resembles the training X-rays
    model_version: str
    tensor: np.ndarray | None = None  # the model input (size × size × 1), for checks that need it too


class ModelBundle:
    """Everything needed to predict, loaded from one model directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.card: dict = self.verify(self.directory)
        self.version: str = self.card["version"]
        self.classes: list[str] = list(self.card["classes"])
        self.input_size: int = int(self.card["input_size"])
        self.threshold: float | None = self.card.get("threshold", {}).get("value")
        # Models from before calibration and the indeterminate outcome carry neither: T = 1, no band.
        self.temperature = float((self.card.get("calibration") or {}).get("temperature", 1.0))
        self.rule = Rule.from_card(self.card)
        try:
            self.gate = GateLimits.load(self.directory / GATE_FILE)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelBundleError(f"{self.directory / GATE_FILE} cannot be used ({exc}). {RETRAIN_HINT}") from exc
        self._load_models()

    @staticmethod
    def verify(directory: Path) -> dict:
        """The model card of `directory` after the checks that need no TensorFlow: every file present, the
        card matching the files' hash, and the preprocessing and lung crop this code makes. Raises
        `ModelBundleError` naming the fault; the gunicorn master calls this before any worker starts."""
        directory = Path(directory)
        if (directory / CARD_FILE).is_file() and not (directory / GATE_FILE).is_file():
            raise ModelBundleError(
                f"The model directory {directory} lacks {GATE_FILE}, the gate's limits fitted on the training "
                f"films, which models trained before they were fitted do not have. Retrain it with `{TRAIN_COMMAND}`."
            )
        missing = [n for n in (*HASHED_FILES, CARD_FILE) if not (directory / n).is_file()]
        if missing:
            raise ModelBundleError(f"The model directory {directory} lacks {', '.join(missing)}. {RETRAIN_HINT}")
        card = json.loads((directory / CARD_FILE).read_text())
        lung_crop = card.get("lung_crop")
        if lung_crop is not None and not (directory / LUNG_FILE).is_file():
            raise ModelBundleError(f"The model directory {directory} lacks {LUNG_FILE}. {RETRAIN_HINT}")
        version = artifact_version(directory)
        if card.get("version") != version:
            raise ModelBundleError(
                f"The model files in {directory} do not match its {CARD_FILE} (card version "
                f"{card.get('version')}, files hash to {version}). {RETRAIN_HINT}"
            )
        if card.get("preprocessing") != PARAMETERS:
            raise ModelBundleError(
                f"The model in {directory} was trained with other preprocessing parameters than this code uses. "
                + RETRAIN_HINT
            )
        if lung_crop is not None and lung_crop != crop_parameters():
            raise ModelBundleError(
                f"The model in {directory} was trained with another lung crop than this code makes. " + RETRAIN_HINT
            )
        return card

    def _load_models(self) -> None:
        import joblib
        import keras
        import tensorflow as tf

        self.cnn = keras.saving.load_model(self.directory / CNN_FILE, compile=False)
        self.localiser = LungLocaliser(self.directory / LUNG_FILE) if self.card.get("lung_crop") else None
        self.ensemble = joblib.load(self.directory / ENSEMBLE_FILE)
        self.ood = FeatureDistance.load(self.directory / OOD_FILE)
        # One image at a time, scikit-learn spends longer on its ~300 trees than the CNN on its forward
        # pass; the compiled ensemble gives the same probabilities in a fraction of that (bench/README.md).
        probes = probe_features(self.ood.mean, self.ood.precision)
        self._ensemble_proba = compile_ensemble(self.ensemble, probes) or self.ensemble.predict_proba
        shape = tuple(self.cnn.inputs[0].shape[1:])
        if shape != (self.input_size, self.input_size, 1) or self.cnn.outputs[0].shape[-1] != len(self.classes):
            raise ModelBundleError(
                f"The CNN in {self.directory} takes {shape} and gives {self.cnn.outputs[0].shape[-1]} classes, "
                f"but the card says {self.input_size} px and classes {self.classes}. {RETRAIN_HINT}"
            )
        conv = self.cnn.get_layer(self.card["gradcam_layer"]).output
        features = self.cnn.get_layer(self.card["feature_layer"]).output
        explainer = keras.Model(self.cnn.inputs, [conv, features, self.cnn.outputs[0]])
        n_classes = len(self.classes)
        signature = [tf.TensorSpec((None, self.input_size, self.input_size, 1), tf.float32)]

        @tf.function(input_signature=signature)
        def forward(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            # keras.io Grad-CAM: gradients of each class score w.r.t. the last conv map, channel
            # weights by their global average, ReLU, normalised with an epsilon (a flat map stays 0).
            with tf.GradientTape(persistent=True) as tape:
                conv_maps, feats, probs = explainer(images, training=False)
                scores = [probs[:, k] for k in range(n_classes)]
            grads = tf.stack([tape.gradient(s, conv_maps) for s in scores], axis=1)
            weights = tf.reduce_mean(grads, axis=(2, 3))
            cams = tf.nn.relu(tf.einsum("nhwc,nkc->nkhw", conv_maps, weights))
            cams = cams / (tf.reduce_max(cams, axis=(2, 3), keepdims=True) + 1e-8)
            return feats, probs, cams

        self._forward_reference = forward  # kept for the tests: the straightforward Grad-CAM
        self._forward = _head_only_gradcam(self.cnn, self.card, signature, forward) or forward
        self._forward(tf.zeros((1, self.input_size, self.input_size, 1)))  # trace at load, not on the first upload

    def forward(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features n × 64, CNN probabilities n × k, Grad-CAM maps n × k × h × w) in one pass."""
        feats, probs, cams = self._forward(np.asarray(tensors, dtype=np.float32))
        return feats.numpy(), probs.numpy(), cams.numpy()

    def embed(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batch features and CNN probabilities, for evaluation over many images."""
        return embed(self.cnn, self.card["feature_layer"], tensors)

    def ensemble_probabilities(self, features: np.ndarray) -> np.ndarray:
        """The ensemble's calibrated probabilities (n × k) for CNN features (n × 64)."""
        return apply_temperature(self._ensemble_proba(features), self.temperature)

    def predict(self, pixels: np.ndarray) -> ModelOutput:
        """Predict one decoded radiograph: its `DecodedImage.frame` (float32 in [0, 1], or 8-bit levels)."""
        prepared = prepare(pixels, self.input_size, self.localiser)
        feats, cnn_probs, cams = self.forward(prepared.tensor[np.newaxis])
        probs = self.ensemble_probabilities(feats)[0]
        index = int(decide(probs[np.newaxis], self.classes, self.threshold)[0])
        ood_score = float(self.ood.distance(feats)[0] / self.ood.threshold)
        return ModelOutput(
            label=self.classes[index],
            probabilities=dict(zip(self.classes, map(float, probs))),
            decision=self.rule.outcomes(probs[np.newaxis], np.array([ood_score]))[0],
            indeterminate_reasons=self.rule.reasons(probs, ood_score),
            cnn_probabilities=dict(zip(self.classes, map(float, cnn_probs[0]))),
            threshold=self.threshold,
            heatmap=cams[0, index],
            box=prepared.box,
            features=feats[0],
            ood_score=ood_score,
            model_version=self.version,
            # The gate's statistics are those of the whole frame: it may reuse the input only when that is it.
            tensor=prepared.tensor if self.localiser is None else None,
        )
