"""Typed schema of one resolved cell: every group Hydra composes is validated here.

Unknown keys are errors everywhere (``extra="forbid"``) so a typo in a YAML file or an
override like ``+serve.max_modl_len=1`` fails at compose time instead of being ignored.
One module per part of a cell (model and quant, drafter, image, what a cell measures, the cell itself); every class
is importable from here.
"""

from specsweep.config.schema.base import Strict  # noqa: F401
from specsweep.config.schema.cell import (  # noqa: F401
    ADAPTIVE_VERIFICATION_DRAFTERS,
    CellCfg,
    HtmlCfg,
    QualityCfg,
    ReportCfg,
    SweepCfg,
    WandbCfg,
)
from specsweep.config.schema.drafter import (  # noqa: F401
    DrafterCfg,
    ModelDrafter,
    NgramDrafter,
    NoDrafter,
    SuffixDrafter,
)
from specsweep.config.schema.image import (  # noqa: F401
    ClusterCfg,
    ContainerImage,
    ContainerRun,
    CpuDockerImage,
    CudaDockerImage,
    DebianBase,
    ImageCfg,
    PreloadLib,
    QuantizerCfg,
    SparkDockerImage,
    VenvImage,
)
from specsweep.config.schema.measure import (  # noqa: F401
    PREFILL_ALLOWANCE_S,
    BenchCfg,
    EndpointQualityCfg,
    EvalCfg,
    LmEvalCfg,
    LosslessCfg,
    ServeCfg,
    SyntheticCfg,
    WorkloadCfg,
)
from specsweep.config.schema.model import (  # noqa: F401
    GROUPED_SCHEMES,
    AutoRoundQuant,
    Calibration,
    HubDatasetCalibration,
    HubQuant,
    HubSource,
    LlmCompressorQuant,
    LlmCompressorScheme,
    ModelCfg,
    ModelSource,
    NoQuant,
    PackagedGgufSource,
    QuantCfg,
    TextFileCalibration,
    TokenizerCheck,
)
