"""Chain: layers called one after the other, as Flux's ``Chain`` and PyTorch's ``nn.Sequential``."""
from __future__ import annotations

from ..tensor import Tensor, as_tensor
from .layers import pooling_plan
from .module import Module, _count


class Chain(Module):
    """Chain(*layers): calls each layer (or plain
    function, like ``flatten``) on the previous result."""

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Chain: layer {i} is not callable: {layer!r}")
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        layers, i = self.layers, 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            plan = pooling_plan(layer, following)
            if plan:
                x = layer.forward_pooled(as_tensor(x), following, plan)  # a speed-up only
                i += 2
            else:
                x = layer(x)
                i += 1
        return x

    def named_parameters(self, prefix: str = ""):
        """Names like PyTorch's Sequential: "0.weight",
        "0.bias", "2.weight", ... (index in the chain)."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Module):
                yield from layer.named_parameters(f"{prefix}{i}.")

    def named_buffers(self, prefix: str = ""):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Module):
                yield from layer.named_buffers(f"{prefix}{i}.")

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def signature(self) -> str:
        return "Chain(...)"

    def _summarize(self, x: Tensor, rows: list, indent: str) -> Tensor:
        rows.append((indent + "Chain(", (), 0))  # a heading row, no shape
        for layer in self.layers:
            if isinstance(layer, Module):
                x = layer._summarize(x, rows, indent + "  ")
            else:  # a plain function such as flatten
                x = layer(x)
                rows.append((indent + "  " + getattr(layer, "__name__", repr(layer)),
                             tuple(x.shape[1:]), 0))
        rows.append((indent + ")", (), 0))
        return x

    def __repr__(self) -> str:
        lines = []
        for layer in self.layers:
            if isinstance(layer, Module):
                nested = isinstance(layer, Chain)
                text = repr(layer).replace("\n", "\n  ") if nested else layer.signature()
                count = layer.num_parameters()
                comment = f"# {_count(count)} parameters" if count and not nested else ""
                lines.append((text + ",", comment))
            else:
                lines.append((getattr(layer, "__name__", repr(layer)) + ",", ""))
        width = max(len(text) for text, _ in lines) if lines else 0
        body = "\n".join(f"  {text:<{width}}  {comment}".rstrip() for text, comment in lines)
        params = self.parameters()
        total = f"# Total: {len(params)} arrays, {_count(self.num_parameters())} parameters"
        return f"Chain(\n{body}\n)  {total}"
