"""Labelled data sets: a manifest CSV or a class-folder tree, label spelling, and the patient-level split."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CLASSES = ("covid", "normal")
# Canonical class names of the COVID-19 Radiography Database and the shared developer set.
KNOWN_LABELS = ("covid", "normal", "viral_pneumonia", "bacterial_pneumonia", "lung_opacity", "other")
LABEL_ALIASES = {"covid_19": "covid", "covid19": "covid", "lung_opacity": "lung_opacity", "no_finding": "normal"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"}
SPLITS = ("train", "val", "test")
# Images of sources kept out of training and validation altogether: the estimate of an unseen hospital.
UNSEEN = "unseen"
SPLIT_FILE = "split.csv"  # saved beside the model so evaluation can reuse the exact split


class DataError(ValueError):
    """A data set that cannot be used as given; the message names the file and row."""


@dataclass(frozen=True)
class Sample:
    path: Path
    file: str  # as written in the manifest, or relative to the folder root
    label: str  # canonical spelling
    patient: str  # patient id, or a unique id of its own when the source has none
    source: str
    origin: str  # "manifest.csv row 12" or the file path, for error messages
    paediatric: bool = False  # the manifest says so: an age under 18, or "paediatric" in its notes


def canonical_label(label: str) -> str:
    """'COVID', 'Viral Pneumonia', 'Lung_Opacity', 'covid-19' → 'covid', 'viral_pneumonia', …"""
    key = re.sub(r"[\s\-]+", "_", label.strip().lower())
    return LABEL_ALIASES.get(key, key)


def load_dataset(
    path: Path, classes: Sequence[str] = DEFAULT_CLASSES, known_labels: Iterable[str] | None = KNOWN_LABELS
) -> tuple[list[Sample], Counter[str]]:
    """Samples of the chosen classes, and a count of the rows left out because of their class.

    Rows whose label is not in `known_labels` (nor `classes`) raise `DataError`, so that a typo does
    not silently shrink a class; `known_labels=None` accepts any label (evaluation on foreign data).
    Whether files exist and decode is checked when they are loaded (`training.images`).
    """
    path = Path(path)
    classes = [canonical_label(c) for c in classes]
    vocabulary = None if known_labels is None else set(known_labels) | set(classes)
    if path.is_file():
        rows = list(_manifest_rows(path))
    elif path.is_dir():
        rows = list(_folder_rows(path))
    else:
        raise DataError(f"{path} is neither a manifest CSV nor a folder of class folders.")
    samples, excluded = [], Counter()
    for sample in rows:
        if vocabulary is not None and sample.label not in vocabulary:
            raise DataError(
                f"{sample.origin}: unknown label '{sample.label}' (expected one of {', '.join(sorted(vocabulary))})."
            )
        if sample.label in classes:
            samples.append(sample)
        else:
            excluded[sample.label] += 1
    if not samples:
        raise DataError(f"{path} holds no images of the classes {', '.join(classes)}.")
    return samples, excluded


def source_from_name(file: str) -> str:
    match = re.match(r"([A-Za-z0-9]+)_\d+$", Path(file).stem)
    return match.group(1) if match else "unknown"


def _manifest_rows(manifest: Path) -> Iterable[Sample]:
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "label"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{manifest}: the header lacks the column(s) {', '.join(sorted(missing))}.")
        for line, row in enumerate(reader, start=2):
            origin = f"{manifest.name} line {line} ({row.get('file') or 'no file'})"
            file = (row.get("file") or "").strip()
            if not file:
                raise DataError(f"{origin}: the file column is empty.")
            label = canonical_label(row.get("label") or "")
            if not label:
                raise DataError(f"{origin}: the label column is empty.")
            patient = (row.get("patient_id") or "").strip() or f"image:{file}"  # see has_patient_id
            source = (row.get("source") or "").strip() or source_from_name(file)
            yield Sample(manifest.parent / file, file, label, patient, source, origin, _paediatric(row))


def _paediatric(row: dict[str, str | None]) -> bool:
    age = (row.get("age") or "").strip()
    notes = (row.get("notes") or "").lower()
    return (age.replace(".", "", 1).isdigit() and float(age) < 18) or "paediatric" in notes or "pediatric" in notes


def _folder_rows(root: Path) -> Iterable[Sample]:
    """`<class>/images/*.png` (COVID-19 Radiography Database) or plain `<class>/*.png`."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class folders (expected e.g. COVID/images/*.png or covid/*.png).")
    for class_dir in class_dirs:
        image_dir = class_dir / "images" if (class_dir / "images").is_dir() else class_dir
        for file in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            relative = file.relative_to(root).as_posix()
            yield Sample(file, relative, canonical_label(class_dir.name), f"image:{relative}", root.name, str(file))


def has_patient_id(sample: Sample) -> bool:
    """Whether the data set gave the sample's patient, rather than one made up for the image alone."""
    return not sample.patient.startswith("image:")


def patient_split(
    samples: Sequence[Sample],
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    seed: int = 42,
    holdout_sources: Iterable[str] = (),
    together: Sequence[Sequence[int]] = (),
) -> dict[str, list[int]]:
    """Indices per split, with every patient in exactly one split.

    Images of `holdout_sources` all go to the extra split `UNSEEN` (present only when it is not
    empty). The others' patients are grouped by (label, source) of their first image and each group
    is shuffled with `seed` and cut at the cumulative image fractions, so every split keeps the class
    and source mix. `together` lists groups of indices that are one film (`training.leaks`): see
    `_keep_together`; without such groups the split is what it was before they were considered.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1, got {fractions}")
    holdout = set(holdout_sources)
    unseen = [index for index, sample in enumerate(samples) if sample.source in holdout]
    by_patient: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        if sample.source not in holdout:
            by_patient[sample.patient].append(index)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for patient, indices in by_patient.items():
        first = samples[indices[0]]
        strata[(first.label, first.source)].append(patient)
    rng = np.random.default_rng(seed)
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    cut_points = np.cumsum(fractions)[:-1]
    for key in sorted(strata):
        patients = sorted(strata[key])
        rng.shuffle(patients)
        total = sum(len(by_patient[p]) for p in patients)
        seen = 0
        for patient in patients:
            # Place a patient by the middle of its images in the running count.
            middle = (seen + len(by_patient[patient]) / 2) / total
            name = SPLITS[int(np.searchsorted(cut_points, middle, side="right"))]
            split[name].extend(by_patient[patient])
            seen += len(by_patient[patient])
    if unseen:
        split[UNSEEN] = unseen
    if together:
        split = _keep_together(samples, split, together, holdout)
    return {name: sorted(indices) for name, indices in split.items()}


def _keep_together(
    samples: Sequence[Sample], split: dict[str, list[int]], together: Sequence[Sequence[int]], holdout: set[str]
) -> dict[str, list[int]]:
    """The split with the copies of each film in one split: the patients of a group of copies (and those
    linked to them through other groups) all move to the split that holds most of their images, the
    first of SPLITS on a tie. Where a copy comes from a held-out source, the other copies' patients are
    left out of every split: the held-out films must stay unseen, and their source defines them."""
    where = {index: name for name, indices in split.items() for index in indices}
    images: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        images[sample.patient].append(index)
    parent: dict[str, str] = {}

    def root(patient: str) -> str:
        while parent.setdefault(patient, patient) != patient:
            patient = parent[patient]
        return patient

    for group in together:
        first = root(samples[group[0]].patient)
        for index in group[1:]:
            other = root(samples[index].patient)
            if other != first:
                parent[other] = first
    components: dict[str, list[str]] = defaultdict(list)
    for patient in parent:
        components[root(patient)].append(patient)
    moved = dict(where)
    for patients in components.values():
        indices = [i for p in patients for i in images[p]]
        if any(where.get(i) == UNSEEN for i in indices):
            for i in indices:
                if where.get(i) != UNSEEN:
                    moved.pop(i, None)
            continue
        present = Counter(where[i] for i in indices if i in where)
        target = max(SPLITS, key=lambda name: (present[name], -SPLITS.index(name)))
        for i in indices:
            if i in where:
                moved[i] = target
    result: dict[str, list[int]] = {name: [] for name in split}
    for index, name in moved.items():
        result[name].append(index)
    return result


def write_split(path: Path, samples: Sequence[Sample], split: dict[str, list[int]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "patient_id", "source", "split"])
        for name, indices in split.items():
            for index in indices:
                s = samples[index]
                writer.writerow([s.file, s.label, s.patient, s.source, name])


def read_split(path: Path) -> dict[str, str]:
    """file → split name, as saved with a model."""
    with path.open(newline="") as handle:
        return {row["file"]: row["split"] for row in csv.DictReader(handle)}


def counts(samples: Sequence[Sample], indices: Sequence[int]) -> dict[str, int | dict[str, int]]:
    """Images per class and per source, for the model card."""
    chosen = [samples[i] for i in indices]
    return {
        "total": len(chosen),
        "per_class": dict(sorted(Counter(s.label for s in chosen).items())),
        "per_source": dict(sorted(Counter(s.source for s in chosen).items())),
    }
