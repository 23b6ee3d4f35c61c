"""The EMCNet-style CNN: stacked Conv2D/ReLU/MaxPool/Dropout blocks, a named 64-unit feature layer
and a softmax head, built with the Keras functional API (Grad-CAM needs `model.inputs`).

Departures from the published EMCNet, each measured (see README, "Training"): batch normalisation
after every convolution (it converges in a third of the epochs, which is what lets a CPU train it)
and global average pooling before the feature layer instead of flattening (fewer weights, less
overfitting to where things sit in the frame).
"""

from __future__ import annotations

import keras
from keras import layers

FEATURE_LAYER = "features"
OUTPUT_LAYER = "probabilities"
BLOCK_DROPOUT = 0.25  # after every block's pooling
HEAD_DROPOUT = 0.5  # between the feature layer and the softmax
CONVOLUTIONS_PER_BLOCK = 2


def activation_layer(block: int, convolution: int) -> str:
    return f"block{block}_relu{convolution}"


def gradcam_layer(blocks: int) -> str:
    """The activation of the last convolution, whose feature map Grad-CAM explains."""
    return activation_layer(blocks, CONVOLUTIONS_PER_BLOCK)


def build_cnn(input_size: int, n_classes: int, base_filters: int = 16, blocks: int = 4) -> keras.Model:
    inputs = keras.Input(shape=(input_size, input_size, 1), name="image")
    x = inputs
    for block in range(1, blocks + 1):
        filters = base_filters * 2 ** (block - 1)
        for conv in range(1, CONVOLUTIONS_PER_BLOCK + 1):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            # momentum 0.9: the moving statistics settle within an epoch of ~100 steps, so validation
            # (inference mode) does not lag the training-mode network for several epochs.
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=activation_layer(block, conv))(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(BLOCK_DROPOUT, name=f"block{block}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    # float32 under a mixed-precision policy too: the features feed the ensemble and the OOD distance,
    # which were fitted on float32 features, and a softmax in bfloat16 loses the small probabilities.
    features = layers.Dense(64, activation="relu", dtype="float32", name=FEATURE_LAYER)(x)
    x = layers.Dropout(HEAD_DROPOUT, name="head_dropout")(features)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name=OUTPUT_LAYER)(x)
    return keras.Model(inputs, outputs, name="emcnet_style_cnn")
