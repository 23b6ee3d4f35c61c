"""The model card's limitations follow the data: its sources, labels, held-out sources, patient
identifiers, copies and ages, not a text written for one data set."""

from __future__ import annotations

from pathlib import Path

from training.card import limitations
from training.data import UNSEEN, Sample


def sample(number: int, label: str, source: str, patient: str = "", paediatric: bool = False) -> Sample:
    file = f"{source}_{number:04d}.png"
    return Sample(Path(file), file, label, patient or f"image:{file}", source, file, paediatric)


def test_limitations_name_the_confounded_sources_the_held_out_counts_and_the_missing_patient_ids() -> None:
    samples = (
        [sample(i, "covid", "webcovid") for i in range(8)]
        + [sample(i, "normal", "hospital", patient=f"p{i}") for i in range(8, 16)]
        + [sample(i, "viral_pneumonia", "hospital", patient=f"p{i}", paediatric=True) for i in range(16, 18)]
        + [sample(i, "covid", "elsewhere") for i in range(18, 21)]
    )
    split = {"train": list(range(0, 14)), "val": [14, 15, 16], "test": [17], UNSEEN: [18, 19, 20]}
    notes = limitations(samples, split, ["viral_pneumonia"], copies=2, crossval=False)
    text = "\n".join(notes)
    assert "The films trained as covid come from webcovid 8 (100%)." in text
    assert "The films trained as normal come from hospital 10 (100%)." in text
    assert "held-out sources (elsewhere; model card 'unseen')" in text and "3 covid (elsewhere 3)" in text
    assert "other findings (viral_pneumonia 2)" in text
    assert "Patient identifiers exist for 10 films (sources: hospital)" in text
    assert "(webcovid 8, elsewhere 3)" in text and "elsewhere, webcovid give none at all" in text
    assert "2 pair(s) of copies of one film" in text
    assert "2 films are marked paediatric in the data (hospital 2)" in text


def test_limitations_of_a_model_with_every_source_in_training_point_to_the_cross_validation() -> None:
    samples = [sample(i, label, "one", patient=f"p{i}") for i, label in enumerate(["covid", "normal"] * 5)]
    split = {"train": list(range(6)), "val": [6, 7], "test": [8, 9]}
    text = "\n".join(limitations(samples, split, [], copies=0, crossval=True))
    assert "No source was held out" in text and "cross-validation estimate" in text
    assert "confounded" not in text, "one source: nothing to confound"
    assert "held-out sources" not in text and "copies" not in text and "Patient identifiers" not in text
    assert "other findings" not in text
    assert "The data marks no film as paediatric" in text
