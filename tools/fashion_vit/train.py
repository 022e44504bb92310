"""Train the small ViT classifier that `octet demo` and the accuracy tests use.

A timm VisionTransformer (28x28 grey images, 4x4 patches, 6 blocks of width 128, 4 heads) is
trained on Fashion-MNIST from Debian's `dataset-fashion-mnist` package, exported to ONNX with the
TorchScript exporter (symbolic batch), and written with the data octet ships next to it:

    OUT/model.onnx       the float model (input `input` [N,1,28,28], output `logits` [N,10])
    OUT/calib.npz        512 training images (`input`), normalised, for calibration
    OUT/test.npz         the first 2,000 test images (`input`), normalised
    OUT/labels.npy       their labels (int64)
    OUT/meta.json        architecture, training settings, time taken, fp32 accuracies

Runs on the CPU (2 cores: 27 minutes for the default 10 epochs on the development machine; a
rerun there gave a byte-identical model.onnx):

    python tools/fashion_vit/train.py --out tests/fixtures/fashion_vit
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402  (tools/fashion_vit/data.py)

MEAN, STD = data.MEAN, data.STD
ARCH = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=128, depth=6, num_heads=4)


def load(data_dir: Path, split: str):
    x, y = data.load(data_dir, split)
    return torch.from_numpy(x), torch.from_numpy(y)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random crop with 2 pixels of background padding and random horizontal flip."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    dx, dy = torch.randint(0, 5, (2, n))
    rows = (dy[:, None] + torch.arange(28))[:, :, None]
    cols = (dx[:, None] + torch.arange(28))[:, None, :]
    out = padded[torch.arange(n)[:, None, None], 0, rows, cols][:, None]
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def accuracy(model, x, y, batch=500) -> float:
    model.eval()
    correct = sum((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item() for i in range(0, len(x), batch))
    return 100.0 * correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/fashion_vit"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_x, train_y = load(args.data, "train")
    test_x, test_y = load(args.data, "t10k")

    model = VisionTransformer(**ARCH, drop_path_rate=0.05)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = len(train_x) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
    )

    start = time.time()
    history = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x))
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch : (step + 1) * args.batch]
            loss = F.cross_entropy(model(augment(train_x[idx])), train_y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            running += loss.item()
        acc = accuracy(model, test_x, test_y)
        minutes = (time.time() - start) / 60
        history.append({"epoch": epoch + 1, "loss": running / steps_per_epoch, "test_top1": acc, "minutes": minutes})
        print(f"epoch {epoch + 1}/{args.epochs}: loss {running / steps_per_epoch:.4f}, test top-1 {acc:.2f} %, {minutes:.1f} min", flush=True)
    train_minutes = (time.time() - start) / 60

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        test_x[:1],
        args.out / "model.onnx",
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    calib_idx = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(1))[:512]
    np.savez_compressed(args.out / "calib.npz", input=train_x[calib_idx].numpy())
    np.savez_compressed(args.out / "test.npz", input=test_x[:2000].numpy())
    np.save(args.out / "labels.npy", test_y[:2000].numpy())
    meta = {
        "architecture": {"timm": "VisionTransformer", **ARCH},
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist), normalised with mean %.4f std %.4f" % (MEAN, STD),
        "training": {"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "optimizer": "AdamW wd 0.05, 1 epoch warm-up, cosine",
                     "augmentation": "random crop (pad 2) + horizontal flip", "label_smoothing": 0.1, "drop_path": 0.05,
                     "seed": args.seed, "threads": torch.get_num_threads(), "minutes": round(train_minutes, 1)},
        "fp32_top1_test10k": accuracy(model, test_x, test_y),
        "fp32_top1_shipped2000": accuracy(model, test_x[:2000], test_y[:2000]),
        "history": history,
        "torch": torch.__version__,
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({k: meta[k] for k in ("fp32_top1_test10k", "fp32_top1_shipped2000")}))


if __name__ == "__main__":
    main()
