"""The README's description of the shipped model, generated from its card, so the two cannot disagree.

    python -m training.model_table --model models/ --readme README.md          # print the block
    python -m training.model_table --model models/ --readme README.md --write  # replace it in the README

The block sits between `START` and `END` in the README; tests/test_shipped_model.py checks that it is what
this module renders from models/model_card.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.operating_point import table_rows

START = "<!-- model-table: generated from models/model_card.json by `python -m training.model_table`; do not edit -->"
END = "<!-- /model-table -->"


def _counts(per_source: dict[str, int]) -> str:
    return ", ".join(f"{source} {n}" for source, n in sorted(per_source.items()))


def render(card: dict) -> str:
    training, data, architecture = card["training"], card["data"], card["architecture"]
    git = training.get("git") or {}
    commit = git.get("commit")
    provenance = f"commit `{commit[:12]}`" if commit else "no recorded commit"
    if git.get("dirty"):
        provenance += " with uncommitted changes"
    held_out = data.get("holdout_sources")
    trained_on = "without " + ", ".join(held_out) if held_out else "on every developer source"
    splits = ", ".join(f"{name} {data[name]['total']}" for name in ("train", "val", "test") if name in data)
    lines = [
        START,
        f"Model `{card['version']}`: {card['input_size']} px input, {architecture['base_filters']} base filters, "
        f"{architecture['blocks']} blocks ({architecture['parameters']:,} parameters); trained "
        f"{trained_on} ({splits} films; training films per source: {_counts(data['train']['per_source'])}), with "
        f"{', '.join(data.get('trained_as_normal') or []) or 'no other findings'} trained as the non-COVID class; "
        f"{training.get('epochs', '?')} epochs, {training.get('policy', 'float32')}, "
        f"{'deterministic' if training.get('deterministic') else 'not deterministic'}.",
        "",
        f"Command ({provenance}):",
        "",
        "```sh",
        training.get("command") or "not recorded",
        "```",
        "",
        f"Operating point ({card['threshold'].get('fitted_on', 'the internal validation split')}): "
        f"{card['threshold']['rule']}; temperature {card['calibration']['temperature']:.3f}.",
    ]
    crossval = card.get("crossval")
    if crossval and crossval.get("estimate"):
        lines += [
            "",
            "**Estimate for a hospital the model never saw** (leave-source-out cross-validation, cross-fitted "
            "operating point; 95 % bootstrap intervals over films; indeterminate counts as no COVID call):",
            "",
            *table_rows(crossval["estimate"]),
        ]
    test = (card.get("outcomes") or {}).get("test", {}).get("all")
    if test:
        lines += [
            "",
            f"Internal test split ({test['n']} films of the training sources, at the operating point): "
            f"sensitivity {test['sensitivity']:.3f}, specificity {test['specificity']:.3f}, indeterminate "
            f"{test['indeterminate_rate']:.3f}, ROC AUC {test['roc_auc']:.3f}, ECE {test['ece']:.3f}. Its films come "
            "from the training collections, so it flatters the model; the cross-validation figures are the estimate "
            "to go by.",
        ]
    lines.append(END)
    return "\n".join(lines)


def current_block(readme: str) -> str | None:
    """The generated block as it stands in the README text, or None when it has none."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        return None
    return readme[start : end + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--write", action="store_true", help="replace the block in the README")
    args = parser.parse_args(argv)
    block = render(json.loads((args.model / "model_card.json").read_text()))
    if not args.write:
        print(block)
        return 0
    readme = args.readme.read_text()
    old = current_block(readme)
    if old is None:
        print(f"error: {args.readme} has no block between {START!r} and {END!r}", file=sys.stderr)
        return 2
    args.readme.write_text(readme.replace(old, block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
