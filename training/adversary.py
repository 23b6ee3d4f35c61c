"""A source adversary for training the CNN (`--source-adversary`): domain-adversarial training
(Ganin & Lempitsky 2015, "DANN") on the collection each film comes from, conditioned on the class.

A small head reads the 64-d features and tries to tell the film's source; a gradient-reversal layer
between the features and that head turns its gradient around, so the features are trained to make
the source hard to tell. The head also sees the true class: sources are confounded with labels here
(most normals come from one collection), and an adversary without the class could only be fooled by
features that also forget the class. Conditioned, it pushes the features to say no more about the
source than the class already does — which is the shortcut a hospital the model never saw exposes.

Only training uses this: the exported network is the CNN alone (`SourceAdversarialCNN.cnn`), the
head and the reversal are dropped.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training.cnn import FEATURE_LAYER

SOURCE_HIDDEN_UNITS = 64


def reversal_weight(epoch: int, epochs: int) -> float:
    """DANN's schedule for the reversed gradient's weight: 0 at the start, rising smoothly towards 1
    (0.68 a sixth of the way in, 0.99 halfway), so the classifier finds its features before the
    adversary bends them."""
    progress = epoch / max(epochs, 1)
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def encode_targets(classes: np.ndarray, sources: np.ndarray, n_sources: int) -> np.ndarray:
    """One integer per film for the training batches: class × n_sources + source."""
    return np.asarray(classes) * n_sources + np.asarray(sources)


@tf.custom_gradient
def reverse_gradient(x: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """The identity forward; backwards, the gradient times −weight."""

    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return -weight * upstream, tf.zeros_like(weight)

    return tf.identity(x), gradient


class SourceAdversarialCNN(keras.Model):
    """Trains `cnn` on the class with the loss above; evaluates and predicts as `cnn` alone.

    Training targets are `encode_targets(class, source)`; validation targets are plain classes (the
    validation loss that early stopping and the learning-rate schedule follow is the classifier's)."""

    def __init__(self, cnn: keras.Model, n_classes: int, n_sources: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cnn = cnn
        self.n_classes, self.n_sources = n_classes, n_sources
        self.encoder = keras.Model(cnn.inputs, [cnn.get_layer(FEATURE_LAYER).output, cnn.outputs[0]])
        self.hidden = layers.Dense(SOURCE_HIDDEN_UNITS, activation="relu", name="source_hidden")
        self.source_logits = layers.Dense(n_sources, dtype="float32", name="source_logits")
        features = cnn.get_layer(FEATURE_LAYER).units
        # Built here, not on the first batch: a checkpoint restores every variable before training resumes.
        self.hidden.build((None, features + n_classes))
        self.source_logits.build((None, SOURCE_HIDDEN_UNITS))
        self.built = True  # every part is built: the CNN by its functional graph, the head just above
        self.reversal = self.add_weight(shape=(), initializer="zeros", trainable=False, name="reversal_weight")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.source_loss_tracker = keras.metrics.Mean(name="source_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.source_loss_tracker, self.accuracy_tracker]

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.cnn(images, training=training)

    @staticmethod
    def _class_loss(labels: tf.Tensor, probabilities: tf.Tensor, sample_weight: tf.Tensor | None) -> tf.Tensor:
        losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        if sample_weight is not None:  # class weights with --sampling shuffle, as Keras applies them
            losses = losses * tf.cast(tf.reshape(sample_weight, tf.shape(losses)), losses.dtype)
        return tf.reduce_mean(losses)

    def train_step(self, data):
        images, targets, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        targets = tf.cast(targets, tf.int32)
        labels, sources = targets // self.n_sources, targets % self.n_sources
        with tf.GradientTape() as tape:
            features, probabilities = self.encoder(images, training=True)
            class_loss = self._class_loss(labels, probabilities, sample_weight)
            reversed_features = reverse_gradient(features, tf.convert_to_tensor(self.reversal))
            given = tf.concat([reversed_features, tf.one_hot(labels, self.n_classes, dtype=features.dtype)], axis=1)
            logits = self.source_logits(self.hidden(given, training=True))
            source_loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(sources, logits, from_logits=True)
            )
            scaled = self.optimizer.scale_loss(class_loss + source_loss)
        self.optimizer.apply(tape.gradient(scaled, self.trainable_variables), self.trainable_variables)
        self.loss_tracker.update_state(class_loss)
        self.source_loss_tracker.update_state(source_loss)
        self.accuracy_tracker.update_state(labels, probabilities)
        return {
            "loss": self.loss_tracker.result(),
            "accuracy": self.accuracy_tracker.result(),
            "source_loss": self.source_loss_tracker.result(),
            "reversal_weight": tf.convert_to_tensor(self.reversal),
        }

    def test_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        probabilities = self.cnn(images, training=False)
        self.loss_tracker.update_state(self._class_loss(labels, probabilities, sample_weight))
        self.accuracy_tracker.update_state(labels, probabilities)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}
