"""One upload, one preprocessing and one forward pass: the gate and the overlay reuse what the prediction
made (bench/inprocess.py measures what that buys)."""

from __future__ import annotations

import dataclasses

import cxr.bundle
import cxr.gate_statistics
import cxr.lungs
from cxr.gate import assess
from cxr.imaging import decode_image


def test_one_preprocess_and_one_forward_pass_per_upload(bundle, chest_png, monkeypatch):
    calls = {"preprocess": 0, "forward": 0}
    real_preprocess, real_forward = cxr.lungs.preprocess, bundle._forward

    def counting_preprocess(*args, **kwargs):
        calls["preprocess"] += 1
        return real_preprocess(*args, **kwargs)

    def counting_forward(*args, **kwargs):
        calls["forward"] += 1
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(cxr.lungs, "preprocess", counting_preprocess)
    monkeypatch.setattr(cxr.gate_statistics, "preprocess", counting_preprocess)
    monkeypatch.setattr(bundle, "_forward", counting_forward)
    image = decode_image(chest_png)
    result = assess(image, bundle.predict(image.pixels), bundle.gate)
    if bundle.localiser is not None:  # the overview for the localiser, the lung box, and the gate's whole frame
        expected = 3
    else:  # a model of another size than the gate's statistics: the gate's own
        expected = 1 if bundle.input_size == cxr.gate_statistics.STATISTICS_SIZE else 2
    assert calls == {"preprocess": expected, "forward": 1}
    assert result.accepted


def test_gate_gives_the_same_answer_with_the_reused_input(bundle, chest_png):
    image = decode_image(chest_png)
    prediction = bundle.predict(image.pixels)
    without_input = dataclasses.replace(prediction, tensor=None)
    assert assess(image, prediction, bundle.gate) == assess(image, without_input, bundle.gate)


def test_head_only_gradcam_equals_the_full_gradient(bundle, chest_png):
    import numpy as np

    from cxr.preprocess import preprocess

    image = decode_image(chest_png)
    x = preprocess(image.pixels, bundle.input_size).tensor[np.newaxis]
    reference = bundle._forward_reference(x)
    for fast, ref in zip(bundle._forward(x), reference):
        np.testing.assert_allclose(fast.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
