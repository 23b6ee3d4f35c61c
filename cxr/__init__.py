"""Code shared by training and serving: image decoding, the one preprocessing path,
the decision rule and the model bundle. Nothing here imports from `training`."""

import os

# TensorFlow's C++ start-up messages (CPU feature notes, oneDNN notices) are not errors but read like
# them; warnings and errors still show. Set before TensorFlow is first imported; the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
