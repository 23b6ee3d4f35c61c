"""The command line of `python -m training.train`, and what resuming a stopped run may change.

    python -m training.train --data ../shared/data/cxr/manifest.csv --out models/
    python -m training.train --resume models/      # continue a run that was stopped

A checkpoint is written to OUT/checkpoint/ after every epoch. Ctrl-C or SIGTERM stops the run; it
then exits with status 75 (as does --stop-after-epochs) and `--resume OUT` continues it to the result
the uninterrupted run gives. The checkpoint is removed once the model is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from training import checkpoint
from training.checkpoint import CHECKPOINT_DIR
from training.data import DEFAULT_CLASSES
from training.precision import CHOICES

NON_COVID_FINDINGS = "viral_pneumonia,bacterial_pneumonia,other"
RESUMABLE = 75  # exit status of a run that stopped before its end and can be resumed (EX_TEMPFAIL)
# Arguments that may differ when a run is resumed: they do not change what it computes.
FREE_ON_RESUME = {"resume", "stop_after_epochs", "cache", "no_cache"}
PATH_ARGUMENTS = {"data", "out", "init_from", "lung_localiser", "cache", "operating_point"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="manifest CSV or class-folder tree (required unless --resume)")
    parser.add_argument("--out", type=Path, help="model directory to write (required unless --resume)")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES), help="comma-separated (default: covid,normal)")
    parser.add_argument("--input-size", type=int, default=128, help="square input side in pixels (default 128)")
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30, help="maximum; early stopping usually ends sooner")
    parser.add_argument("--patience", type=int, default=4, help="early-stopping patience on validation loss")
    parser.add_argument("--warmup-epochs", type=int, default=4, help="epochs before early stopping may act")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--split", default="0.7,0.2,0.1", help="train,validation,test fractions")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--holdout-sources",
        default="",
        help="comma-separated sources kept out of training and validation altogether; their "
        "figures estimate a hospital the model never saw",
    )
    parser.add_argument(
        "--negatives",
        default=NON_COVID_FINDINGS,
        help=f"labels trained as the class 'normal' (non-COVID); '' for none (default: {NON_COVID_FINDINGS})",
    )
    parser.add_argument(
        "--sampling",
        choices=("balanced", "shuffle"),
        default="balanced",
        help="balanced: every class an equal share of an epoch, sources within a class by "
        "sqrt(size); shuffle: every training image once per epoch, with class weights",
    )
    parser.add_argument("--epoch-size", type=int, default=2048, help="images per epoch with --sampling balanced")
    parser.add_argument(
        "--augment",
        choices=("acquisition", "geometry"),
        default="geometry",
        help="geometry: rotation, shift, zoom (default); acquisition: also resolution loss, blur/sharpen, JPEG "
        "and noise (in leave-source-out cross-validation it ranked better but called fewer normals normal: "
        "README, 'Seeds and recipes')",
    )
    parser.add_argument(
        "--source-adversary",
        action="store_true",
        help="train the features against a head that tells each film's source from them and its class "
        "(gradient reversal; training.adversary); the exported CNN is the same network either way. In "
        "leave-source-out cross-validation it did not beat the shipped recipe (README, 'Seeds and recipes')",
    )
    parser.add_argument(
        "--adversary-weight",
        type=float,
        default=1.0,
        help="with --source-adversary: the reversed gradient's weight once the schedule has risen (DANN's λ); "
        "at 1 the classifier stopped learning here, 0.3 trained as without the adversary",
    )
    parser.add_argument(
        "--mix-sources",
        action="store_true",
        help="blend about half of the training films' Fourier amplitude (a collection's look) with that of a "
        "film of the same class from another source, keeping their phase (anatomy): training.mixing. In "
        "leave-source-out cross-validation it called fewer normals normal (README, 'Seeds and recipes')",
    )
    parser.add_argument("--min-sensitivity", type=float, default=0.95, help="threshold rule for covid")
    parser.add_argument(
        "--indeterminate-sensitivity",
        type=float,
        default=0.99,
        help="below the threshold, films are indeterminate down to the p(covid) at which "
        "'covid or indeterminate' reaches this validation sensitivity",
    )
    parser.add_argument(
        "--unusual-quantile",
        type=float,
        default=0.95,
        help="validation quantile of the OOD distance above which a film not called covid is indeterminate",
    )
    parser.add_argument("--ood-quantile", type=float, default=0.995, help="validation quantile of the OOD gate")
    parser.add_argument(
        "--operating-point",
        type=Path,
        metavar="JSON",
        help="the operating point `training.crossval` fitted on out-of-source predictions "
        "(OUT/operating_point.json): temperature, threshold, indeterminate band and unusual score "
        "come from it instead of the internal validation split, and its estimate goes into the card",
    )
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable rows instead of stopping")
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL_DIR",
        help="start from the CNN weights of this model (fine-tuning); it must have the same "
        "architecture and have been trained on the same split",
    )
    parser.add_argument(
        "--lung-localiser",
        type=Path,
        metavar="FILE",
        help="a lung localiser from `python -m training.lungs`: the CNN then sees the lung box "
        "only, and the localiser ships in the model directory",
    )
    parser.add_argument(
        "--precision",
        choices=CHOICES,
        default="auto",
        help="auto: bfloat16 mixed precision where the CPU computes bfloat16 natively "
        "(AVX512_BF16, AMX), else float32; the exported model is float32 either way",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow's op determinism: a resumed run ends with the same weights as an "
        "uninterrupted one with the same seed",
    )
    parser.add_argument(
        "--resume", type=Path, metavar="DIR", help="continue the stopped run whose --out was DIR, with its arguments"
    )
    parser.add_argument(
        "--stop-after-epochs",
        type=int,
        metavar="N",
        help="stop, resumably, after N epochs of this invocation (time-boxed sessions)",
    )
    parser.add_argument("--cache", type=Path, default=Path(".cache"), help="where decoded arrays are cached")
    parser.add_argument("--no-cache", action="store_true")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is None:
        if args.data is None or args.out is None:
            parser.error("--data and --out are required (or --resume DIR)")
        return args
    try:
        saved = checkpoint.saved_arguments(args.resume / CHECKPOINT_DIR)
    except OSError:
        parser.error(f"no checkpoint to resume in {args.resume / CHECKPOINT_DIR}")
    # Attributes already in the namespace are not given defaults, so what stays unset was not on the command line.
    unset = object()
    given = parser.parse_args(argv, namespace=argparse.Namespace(**{key: unset for key in vars(args)}))
    for key, value in vars(given).items():
        if value is unset or key in FREE_ON_RESUME:
            continue
        wanted = str(value) if isinstance(value, Path) else value
        if wanted != saved.get(key) and not (key == "out" and Path(wanted) == args.resume):
            parser.error(
                f"--{key.replace('_', '-')} {wanted} differs from the stopped run's {saved.get(key)}; "
                "leave it out to resume that run"
            )
    resumed = {
        key: Path(value) if key in PATH_ARGUMENTS and value is not None else value for key, value in saved.items()
    }
    # An option added after the run stopped was not in its arguments: the run trains as its default does.
    defaults = {key: value for key, value in vars(args).items() if key not in saved}
    return argparse.Namespace(
        **(defaults | resumed | {key: getattr(args, key) for key in FREE_ON_RESUME} | {"out": args.resume})
    )


def stage(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)
