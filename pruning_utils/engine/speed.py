"""How the loops use the hardware: memory format, bf16 autocast, torch.compile."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Speed:
    """How the loops use the hardware; none changes what is computed, bf16 only its precision.

    ``channels_last``: the model's weights and every 4-D batch in NHWC order (faster convolutions on GPUs and on
    many CPUs); ``bf16``: the forward and the loss under bfloat16 autocast (GPUs; CPUs with AVX512-BF16 or AMX);
    ``compile``: ``torch.compile`` of the model's forward in place (state_dict keys unchanged).
    """

    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    @classmethod
    def for_device(cls, device: torch.device | str, channels_last: bool | None = None, bf16: bool | None = None,
                   compile: bool = False) -> "Speed":
        """The options for ``device``; one left as None is on where it is the usual speed-up (CUDA), else off."""
        cuda = torch.device(device).type == "cuda"
        return cls(cuda if channels_last is None else channels_last, cuda if bf16 is None else bf16, compile)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Apply the memory format and compilation to ``model`` in place; return it."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            # compiled modules share one code object's cache: train and eval modes, alpha's three paths, the teacher
            # and the partial last batch each add entries, more than dynamo's default limit of 8
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_GRAPHS_LIMIT)
            model.compile()
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def autocast(self, x: torch.Tensor):
        """bfloat16 autocast on ``x``'s device when ``bf16`` is set, else a context that does nothing."""
        return torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()


PLAIN = Speed()


COMPILED_GRAPHS_LIMIT = 64
