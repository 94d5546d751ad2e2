"""Knowledge distillation: the incoming model teaches a thinner (and optionally shallower) student.

The student is derived from the teacher's *current* architecture: a copy whose channels are cut
by the width factor (Torch-Pruning, so a pruned or quantised teacher gives a pruned, quantised
student), whose shape-preserving blocks are dropped by the depth factor, and (a transformer) whose
attention keeps the `heads` fraction of its heads. It trains on the
soft targets of the teacher (temperature T, weight alpha) plus the hard labels, exit by exit.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import all_outputs, quantisable_attention
from ..models.structure import vision_transformers
from ..train import train
from .base import Context, Incompatible, Method, check_choice, check_range, require_classifier, require_staged, require_trainable
from .early_exit import TransformerExits
from .prune import shrink_width
from .token_merge import TokenMergingLayers, block_names


@dataclass(frozen=True)
class DistillConfig:
    width: float = 0.6
    depth: float = 1.0
    heads: float = 1.0  # the fraction of each attention's heads the student keeps (a transformer)
    temperature: float = 4.0
    alpha: float = 0.7
    init: str = field(default="teacher", metadata={"choices": ("teacher", "scratch")})

    def __post_init__(self):
        check_range("student width", self.width, 0.0, 1.0, low_open=True)
        check_range("student depth", self.depth, 0.0, 1.0, low_open=True)
        check_range("student heads", self.heads, 0.0, 1.0, low_open=True)
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("distillation weight alpha", self.alpha, 0.0, 1.0)
        check_choice("student init", self.init, ("teacher", "scratch"))
        if self.width == 1.0 and self.depth == 1.0 and self.heads == 1.0:
            raise ValueError("a student with width 1, depth 1 and all heads is the teacher itself: lower width, depth or heads")


@torch.no_grad()
def _block_shapes(stage: nn.Sequential, x: torch.Tensor) -> tuple[list[bool], torch.Tensor]:
    keeps_shape = []
    for block in stage:
        y = block(x)
        keeps_shape.append(y.shape == x.shape)
        x = y
    return keeps_shape, x


def drop_blocks(model: nn.Module, depth: float, example: torch.Tensor) -> None:
    """Keep ceil(depth * n) blocks of each stage, dropping shape-preserving blocks from the end (a Vision
    Transformer: of its encoder); Incompatible when there are no stages or nothing to drop: a depth setting
    is never ignored."""
    if vision_transformers(model):
        _drop_encoder_blocks(model, depth)
        if isinstance(model, TransformerExits):
            model.drop_orphan_exits()
        return
    require_staged(model, f"distill with depth {depth}")
    x, dropped = model.stem(example), 0
    for index, stage in enumerate(model.stages):
        if not isinstance(stage, nn.Sequential):
            x = stage(x)
            continue
        keeps_shape, x = _block_shapes(stage, x)
        removable = [i for i, same in enumerate(keeps_shape) if same and i > 0]
        drop = set(removable[::-1][: len(stage) - math.ceil(depth * len(stage))])
        model.stages[index] = nn.Sequential(*(b for i, b in enumerate(stage) if i not in drop))
        dropped += len(drop)
    if not dropped:
        blocks = ", ".join(str(len(stage)) if isinstance(stage, nn.Sequential) else "1" for stage in model.stages)
        raise Incompatible(f"distill's depth {depth} drops no block: the stages have {blocks} blocks, and only a block after a stage's "
                           "first that keeps its input's shape can go; lower the depth or leave it at 1")


def _drop_encoder_blocks(model: nn.Module, depth: float) -> None:
    """Keep the first ceil(depth * n) encoder blocks of every Vision Transformer (each keeps its tokens' shape)."""
    dropped, counts = 0, []
    for vit in vision_transformers(model):
        layers = vit.encoder.layers  # torchvision's Sequential of blocks, or token merging's module holding them
        merging = isinstance(layers, TokenMergingLayers)
        names = block_names(layers)
        keep = math.ceil(depth * len(names))
        for name in names[keep:]:
            delattr(layers, name)  # by name: the kept blocks keep torchvision's names (del on a Sequential renumbers them)
        if merging:
            layers.block_names = names[:keep]
        counts.append(len(names))
        dropped += len(names) - keep
    if not dropped:
        raise Incompatible(f"distill's depth {depth} drops no block: the encoder has {', '.join(map(str, counts))} blocks; "
                           "lower the depth or leave it at 1")


class TeacherOutputs:
    """The frozen teacher's outputs (every exit's logits) for each training image, computed the first time a batch
    holds it and reused in later epochs: the teacher is in eval mode and never changes, and its forward pass was
    a third of a distillation step's time (a ViT's four blocks teaching two)."""

    def __init__(self, teacher: nn.Module, images: int):
        self.teacher, self.images = teacher, images
        self.known: torch.Tensor | None = None
        self.outputs: list[torch.Tensor] = []

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
        if self.known is None:
            self.known = torch.zeros(self.images, dtype=torch.bool, device=rows.device)
        new = ~self.known[rows]
        if bool(new.any()):
            fresh, computed = rows[new], all_outputs(self.teacher, x[new])
            if not self.outputs:
                self.outputs = [out.new_zeros((self.images, *out.shape[1:])) for out in computed]
            for stored, out in zip(self.outputs, computed):
                stored[fresh] = out
            self.known[fresh] = True
        return [stored[rows] for stored in self.outputs]


def kd_loss(teacher: nn.Module, config: DistillConfig, images: int):
    """Soft-target KL (scaled by T^2) plus cross-entropy, averaged over the student's exits; `images` is the size of
    the training split, whose rows each batch names."""
    t = config.temperature
    teacher_outputs = TeacherOutputs(teacher, images)

    def loss(outputs, x, y, rows):
        targets = teacher_outputs(x, rows)
        total = 0.0
        for index, out in enumerate(outputs):
            target = targets[index] if len(targets) == len(outputs) else targets[-1]
            soft = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(target / t, 1), log_target=True, reduction="batchmean")
            total = total + config.alpha * t * t * soft + (1 - config.alpha) * F.cross_entropy(out, y)
        return total / len(outputs)

    return loss


def _reset(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()


def apply(model: nn.Module, config: DistillConfig, context: Context) -> nn.Module:
    require_trainable(model, "distill")
    narrower = config.width < 1.0 or config.heads < 1.0
    if narrower:
        require_classifier(model, "distill with width or heads < 1")
    if config.heads < 1.0 and not quantisable_attention(model):
        raise Incompatible(f"distill's heads {config.heads} removes attention heads, and this model has no self-attention to "
                           "remove them from (torchvision's ViT has): leave heads at 1")
    teacher = model.to(context.device).eval()
    student = copy.deepcopy(teacher)
    example = context.data.example_input(2).to(context.device)
    if config.depth < 1.0:
        drop_blocks(student, config.depth, example)
    if narrower:
        student = shrink_width(student, 1.0 - config.width, "l2", context, heads=1.0 - config.heads)
    if config.init == "scratch":
        _reset(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return train(student, context.data, context.budget, seed=context.seed, device=context.device,
                 loss_fn=kd_loss(teacher, config, len(context.data.train)), progress=context.progress, label="train student")


METHOD = Method("distill", "Knowledge distillation", DistillConfig, apply, "width",
                "A thinner copy of the current model learns from its soft targets.")
