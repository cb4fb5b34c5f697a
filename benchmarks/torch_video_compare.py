"""The video example's default network for own clips, trained by a plain PyTorch loop on the same decoded clips.

    python benchmarks/torch_video_compare.py --video-dir DIR --size 48 [--model bn|small] [--epochs 30]

A reference for ``examples/video_conv.py --video-dir DIR --size 48 --val-split 0.2``: the same clips,
decoded by ``tf.data.video_folder`` as the example decodes them (with augmentation: a quarter more frames
and a margin of pixels); the same validation split (``tf.train.split_validation``, seed 0); the same
network (``tf.models.video_bn_net``, or the small one), built in PyTorch; AdamW (bn) or Adam (small)
at the same rate, batches of 8 shuffled every epoch, the same augmentation (``ClipAugment`` on the
batch before it becomes a torch tensor). The epoch with the best validation accuracy is kept and
scored once on the test clips. PyTorch is not a dependency of tinyflux: pip install torch==2.13.0.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

import tinyflux as tf


def bn_net(classes: int, width: int = 16, dropout: float = 0.5, standardize: bool = True) -> torch.nn.Module:
    layers, channels = [torch.nn.InstanceNorm3d(3)] if standardize else [], 3
    for out in (width, 2 * width, 4 * width):
        layers += [torch.nn.Conv3d(channels, out, 3, padding=1), torch.nn.BatchNorm3d(out), torch.nn.ReLU(),
                   torch.nn.MaxPool3d(2)]
        channels = out
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool3d((1, 2, 2)), torch.nn.Flatten(),
                               torch.nn.Dropout(dropout), torch.nn.Linear(channels * 4, classes))


def small_net(classes: int, frames: int, size: int) -> torch.nn.Module:
    layers, channels = [], 3
    for out in (8, 16, 32):
        layers += [torch.nn.Conv3d(channels, out, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool3d(2)]
        channels = out
    features = 32 * (frames // 8) * (size // 8) ** 2
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(features, classes))


def accuracy(model, clips, labels) -> float:
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(torch.from_numpy(clips[i:i + 32].astype(np.float32) / 255))
                            for i in range(0, len(clips), 32)])
    return float((scores.argmax(1).numpy() == labels).mean())


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video-dir", required=True)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--model", choices=["bn", "small"], default="bn")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                   help="bn: each clip's colours to zero mean and unit variance first, as tf.models.video_bn_net")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="draw random views as the example's --augment does; --no-augment: decode at the "
                        "network's size and show every clip as it is")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    augment = tf.data.augment.ClipAugment(args.frames, args.size, args.size)
    frames, size = augment.decoded()[:2] if args.augment else (args.frames, args.size)  # as video_conv.py does
    train, train_labels, classes = tf.data.video_folder(args.video_dir, "train", frames, size)
    test, test_labels, _ = tf.data.video_folder(args.video_dir, "test", frames, size, classes)
    (train, train_labels), (val, val_labels) = tf.train.split_validation(train, train_labels, 0.2, args.seed)
    if args.augment:
        val, test = augment.center(val), augment.center(test)
    model = (bn_net(len(classes), standardize=args.standardize) if args.model == "bn" else
             small_net(len(classes), args.frames, args.size))
    opt = (torch.optim.AdamW(model.parameters(), lr=args.lr) if args.model == "bn" else
           torch.optim.Adam(model.parameters(), lr=args.lr))
    rng = np.random.default_rng(args.seed)
    best, best_state = -1.0, None
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(train), args.batch_size):
            index = order[start:start + args.batch_size]
            x = train[index].astype(np.float32) / 255
            x = augment(x, rng) if args.augment else x
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(train_labels[index]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc = accuracy(model, val, val_labels)
        print(f"[{epoch}]: loss {float(loss):.4f}, validation accuracy {acc:.4f}", flush=True)
        if acc >= best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    result = accuracy(model, test, test_labels)
    print(f"PyTorch {torch.__version__}, {args.model}: best validation accuracy {best:.4f}; "
          f"test accuracy {result:.4f}")
    return result


if __name__ == "__main__":
    main()
