"""The recipe: model, data, optional training, compression plan, targets and acceptance gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from toolchain.config.base import Strict
from toolchain.config.search import SearchSpec

Mode = Literal["float32", "dynamic", "float16", "int8", "int16x8"]
IOType = Literal["float32", "int8", "uint8", "int16"]
APPLICATIONS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "Transformer", "Decoder")


#: Recipe and target names become folder and file names.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


#: Bounds on counts, far past any build here: a typo (``epochs: 10**30``) is refused by ``recipe check``, not deep in
#: TensorFlow; seeds are what NumPy and TensorFlow take (unsigned 32-bit).
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_SAMPLES = 1_000_000
MAX_CLASSES = 100_000
MAX_DIM = 4096
Dim = Annotated[int, Field(ge=1, le=MAX_DIM)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


def _layer_pattern(value: str) -> str:
    if not value.strip():
        raise ValueError("an empty layer name or pattern names no layer")
    return value


#: a Keras layer name or fnmatch pattern
LayerPattern = Annotated[str, AfterValidator(_layer_pattern)]


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths in a recipe are relative to the recipe file."""
    base = (info.context or {}).get("base_dir")
    if value is None or value.is_absolute() or base is None:
        return value
    return (Path(base) / value).resolve()


Task = Literal["classification", "regression", "anomaly", "none", "language_model"]
#: a language model's vocabulary: the 256 byte values (any text, no vocabulary file)
BYTE_VOCAB = 256


class TransformerSpec(Strict):
    """``application: Transformer``: the toolchain's own encoder, one token per input row (``models.transformer``)."""

    dim: int = Field(32, ge=4, le=1024, description="the embedding width")
    heads: int = Field(4, ge=1, le=64, description="attention heads (dim must be a multiple)")
    blocks: int = Field(2, ge=1, le=24, description="encoder blocks")
    ffn: int = Field(64, ge=1, le=8192, description="the feed-forward width")
    activation: Literal["gelu", "relu"] = Field("gelu", description="the feed-forward activation")
    norm: Literal["post", "pre"] = Field(
        "post", description="post: LayerNorm after each residual add (BERT); pre: before each sub-block (GPT, ViT)"
    )

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not a multiple of heads {self.heads}")
        return self


class DecoderSpec(Strict):
    """``application: Decoder``: the toolchain's byte-level decoder language model (``models.decoder``)."""

    dim: int = Field(64, ge=4, le=1024, description="the embedding width")
    heads: int = Field(4, ge=1, le=64, description="attention heads (dim must be a multiple)")
    blocks: int = Field(2, ge=1, le=24, description="decoder blocks")
    ffn: int = Field(128, ge=1, le=8192, description="the feed-forward width")
    context: int = Field(64, ge=2, le=4096, description="the longest context, in tokens (bytes): the KV cache's")
    activation: Literal["gelu", "relu"] = Field("relu", description="the feed-forward activation")

    @property
    def params(self) -> int:
        """Its parameter count, before anything is built (embedding and head over 256 bytes, positions, blocks)."""
        d, f = self.dim, self.ffn
        block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        return 2 * BYTE_VOCAB * d + BYTE_VOCAB + self.context * d + self.blocks * block + 2 * d

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not a multiple of heads {self.heads}")
        if self.params > MAX_DECODER_PARAMS:
            raise ValueError(
                f"{self.params:,} parameters: more than the {MAX_DECODER_PARAMS:,} a device decoder built here may have"
            )
        return self


#: a decoder that trains on 2 cores and ships to a phone: far below this (the bound stops a typo allocating GBs)
MAX_DECODER_PARAMS = 50_000_000


class ModelSpec(Strict):
    """Exactly one of ``application`` (a Keras application built from scratch, or the toolchain's Transformer) or
    ``file``."""

    application: Literal[APPLICATIONS] | None = None  # type: ignore[valid-type]
    file: Path | None = Field(
        None,
        description=".keras (Keras 3 or tf_keras), .h5, a SavedModel directory, a .tflite, a PyTorch "
        "ExportedProgram (.pt2, from torch.export.save) or an ONNX model (.onnx)",
    )
    signature: str | None = Field(
        None,
        description="a SavedModel's signature to convert (SavedModels Keras did not write); not set: load with Keras",
    )
    reference: Path | None = Field(
        None, description="with a .tflite file: the model its outputs are compared with (a float .tflite or Keras file)"
    )
    alpha: float = Field(1.0, gt=0, le=1.4)
    input_shape: tuple[Dim, Dim, Dim] | None = None
    classes: int = Field(10, ge=2, le=MAX_CLASSES, description="classification: the number of classes")
    weights: Literal["none", "imagenet"] | None = "none"
    transformer: TransformerSpec | None = Field(None, description="application: Transformer: its shape")
    decoder: DecoderSpec | None = Field(None, description="application: Decoder: its shape")

    _resolve_file = field_validator("file", "reference")(_resolve)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.application is None) == (self.file is None):
            raise ValueError("give exactly one of 'application' or 'file'")
        if self.application == "Decoder":
            if self.input_shape is not None:
                raise ValueError("a Decoder reads tokens: its input is 'decoder.context' long, not 'input_shape'")
            if "classes" in self.model_fields_set and self.classes != BYTE_VOCAB:
                raise ValueError(f"a Decoder's vocabulary is the {BYTE_VOCAB} byte values: leave out 'classes'")
            object.__setattr__(self, "decoder", self.decoder or DecoderSpec())
            object.__setattr__(self, "classes", BYTE_VOCAB)
        elif self.application and self.input_shape is None:
            raise ValueError("'input_shape' is required with 'application'")
        if self.decoder is not None and self.application != "Decoder":
            raise ValueError("'decoder' goes with 'application: Decoder'")
        if self.signature is not None and (self.file is None or self.file.suffix in (".tflite", ".keras", ".h5")):
            raise ValueError("'signature' goes with a SavedModel directory 'file'")
        if self.transformer is not None and self.application != "Transformer":
            raise ValueError("'transformer' goes with 'application: Transformer'")
        if self.reference is not None and not self.is_tflite:
            raise ValueError("'reference' goes with a .tflite 'file' (any other model is its own reference)")
        return self

    @property
    def kind(self) -> str:
        """``keras`` (applications, .keras, .h5, SavedModels), ``tflite``, ``torch`` (.pt2) or ``onnx``."""
        return FILE_KINDS.get(self.file.suffix.lower(), "keras") if self.file is not None else "keras"

    @property
    def is_tflite(self) -> bool:
        return self.kind == "tflite"


#: Model files that are not Keras: their float graph is a flatbuffer (read, or converted by litert-torch), which
#: the toolchain quantizes itself; training and compression steps need a Keras model.
FILE_KINDS = {".tflite": "tflite", ".pt2": "torch", ".onnx": "onnx"}
#: How messages name a model of each kind ("<name> model").
KIND_NAMES = {"keras": "a Keras", "tflite": "a .tflite", "torch": "a PyTorch (.pt2)", "onnx": "an ONNX"}


class Normalization(Strict):
    """Pixels are first scaled to [0, 1]; then ``(x - mean) / std``."""

    mean: float = 0.5
    std: float = Field(0.5, gt=0)


class Split(Strict):
    train: float = Field(0.7, ge=0, lt=1)
    calibration: float = Field(0.1, gt=0, lt=1)
    eval: float = Field(0.2, gt=0, lt=1)
    seed: Seed = 0

    @model_validator(mode="after")
    def _sums_to_one(self):
        if abs(self.train + self.calibration + self.eval - 1.0) > 1e-6:
            raise ValueError("train + calibration + eval must add up to 1")
        return self


class Calibration(Strict):
    """A representative set apart from the labelled data: every sample calibrates (no split)."""

    npz: Path
    strict: bool = Field(
        False, description="refuse the set when samples lie far outside the training data's range (data.drift)"
    )
    drop_outliers: bool = Field(False, description="calibrate without the samples far outside the training data's")

    _resolve_paths = field_validator("npz")(_resolve)


class DataSpec(Strict):
    """Exactly one of ``builtin``, ``folder`` (one sub-folder per class) or ``npz``: one array per model input
    (named as the input, or ``x`` for a single input) and optional labels ``y``."""

    builtin: Literal["digits"] | None = None
    folder: Path | None = None
    npz: Path | None = None
    text: Path | None = Field(
        None,
        description="task language_model: a text file, read as bytes and cut into windows of the context; split "
        "in order (train first, eval last: held-out text)",
    )
    normalization: Normalization | None = Field(
        None, description="default: mean 0.5, std 0.5 for images (builtin, folder); none for arrays (npz)"
    )
    resize: bool | None = Field(
        None, description="fit images to the model's height, width and channels; default: on for builtin and folder"
    )
    calibration: Calibration | None = None
    split: Split = Split()
    layout: Literal["nchw", "nhwc"] | None = Field(
        None,
        description="the layout of npz image data: nchw or nhwc (channels last); default: the model's own (nchw "
        "for a PyTorch model, read from an ONNX graph, nhwc for the others); an ONNX model whose layout its graph "
        "does not show takes it from here",
    )

    _resolve_paths = field_validator("folder", "npz", "text")(_resolve)

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.builtin, self.folder, self.npz, self.text)) != 1:
            raise ValueError("give exactly one of 'builtin', 'folder', 'npz' or 'text'")
        if self.text is not None and (self.calibration or self.normalization or self.resize or self.layout):
            raise ValueError(
                "data.text: the text's bytes are the tokens: calibration, normalization, resize and layout do not apply"
            )
        return self


class TrainSpec(Strict):
    epochs: int = Field(8, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    learning_rate: float = Field(2e-3, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="softer targets: less over-confident logits quantize better"
    )
    seed: Seed = 0
    # Keras applications default to 0.999, which leaves moving statistics untrained after a short
    # fit (the model then predicts at chance in inference mode). None keeps the model's own value.
    batchnorm_momentum: float | None = Field(0.9, gt=0, lt=1)
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="TensorFlow's threads for the build (default: every core). The trained weights depend on them "
        "(float sums split across threads): a recipe that must rebuild byte-identical elsewhere names them",
    )


class FeaturePair(Strict):
    """Match the student layer's output to the teacher layer's (a 1x1 adapter maps the channels when they differ)."""

    teacher: LayerPattern
    student: LayerPattern


class Relation(Strict):
    """Relation-based knowledge: ``rkd_distance`` / ``rkd_angle`` (Park et al. 2019: the distances, or the angles,
    between the samples' embeddings at one layer, globally average-pooled) or ``fsp`` (Yim et al. 2017: the Gram
    matrix between two layers' feature maps of one spatial size, the student's mapped to the teacher's channels by
    1x1 adapters)."""

    kind: Literal["rkd_distance", "rkd_angle", "fsp"]
    student: list[LayerPattern] = Field(min_length=1, max_length=2, description="one layer (rkd), two (fsp)")
    teacher: list[LayerPattern] | None = Field(None, description="the teacher's layers; default: the same names")
    weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _layers(self):
        need = 2 if self.kind == "fsp" else 1
        for side, layers in (("student", self.student), ("teacher", self.teacher)):
            if layers is not None and len(layers) != need:
                raise ValueError(f"{self.kind} relates {need} layer{'s' * (need > 1)}: {side} names {len(layers)}")
        return self


class Distill(Strict):
    """Train against the float teacher's softened outputs as well as the labels, and optionally against its
    intermediate feature maps (``features``: mean squared error after a trained 1x1 adapter, FitNets-style) and the
    relations between its samples or layers (``relations``). ``mode``: ``offline`` (the trained float model
    teaches), ``online`` (``students`` copies of the student learn from each other's softened outputs, no
    teacher: deep mutual learning), ``self`` (auxiliary heads on the layers ``heads`` names learn from the
    network's own output, deep supervision; the heads are removed before conversion)."""

    mode: Literal["offline", "online", "self"] = "offline"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term (1 - alpha: the labels)")
    features: list[FeaturePair] = Field(
        default_factory=list, description="teacher/student layer pairs whose outputs the student learns to match"
    )
    feature_weight: float = Field(1.0, ge=0, description="weight of the feature terms (each a mean squared error)")
    relations: list[Relation] = Field(default_factory=list, description="relation terms against the teacher")
    students: int = Field(2, ge=1, le=8, description="online: the students trained together (the first is kept)")
    heads: list[LayerPattern] = Field(default_factory=list, description="self: layers that get an auxiliary head")
    head_weight: float = Field(1.0, ge=0, description="self: weight of each auxiliary head's terms")

    @property
    def custom(self) -> bool:
        """Whether the toolchain's own training step runs (relations, online, self), not Keras' compiled losses."""
        return bool(self.relations) or self.mode != "offline"


class FineTune(Strict):
    epochs: int = Field(2, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    learning_rate: float = Field(2e-4, gt=0)
    lr_schedule: Literal["cosine", "constant"] | None = Field(
        None,
        description="default: constant for magnitude/2:4 pruning (late masks need a learning rate to recover), "
        "cosine otherwise",
    )
    seed: Seed = 0
    distill: Distill | None = None


class QatStep(FineTune):
    """Quantization-aware training (tensorflow-model-optimization fake-quant nodes)."""

    step: Literal["qat"]


class PruneStep(FineTune):
    """``magnitude`` (tfmot low-magnitude), ``2:4`` (structured 2-of-4) or ``l1_filter`` (whole filters)."""

    step: Literal["prune"]
    method: Literal["magnitude", "2:4", "l1_filter"]
    target_sparsity: float = Field(
        0.5, gt=0, lt=1, description="magnitude: share of zero weights; l1_filter: share of filters removed"
    )
    schedule: Literal["constant", "polynomial"] = "polynomial"
    channel_multiple: int = Field(1, ge=1, le=MAX_DIM, description="l1_filter: keep a multiple of this many channels")


class FineTuneStep(FineTune):
    """Fine-tune the model as it is (with ``distill``: learn from the float teacher's outputs and feature maps);
    also the control a compression step is compared with: the same epochs without the compression."""

    step: Literal["finetune"]


class LowRankStep(FineTune):
    """Factorize Dense and Conv2D layers (truncated SVD; a k x k conv as k x 1 + 1 x k, or a Tucker 1x1 / k x k /
    1x1 sandwich) at a rank chosen per layer, then fine-tune. Layers whose factorized form costs as many MACs are
    left alone."""

    step: Literal["low_rank"]
    energy: float = Field(
        0.9, gt=0, le=1, description="the smallest rank keeping this share of the squared singular values"
    )
    macs_removed: float | None = Field(
        None, gt=0, lt=1, description="instead of energy: per layer, the largest rank removing this share of its MACs"
    )
    conv: Literal["spatial", "tucker"] = Field("spatial", description="how a k x k (k > 1) Conv2D is factorized")
    layers: list[LayerPattern] = Field(
        default_factory=list, description="Keras layer names or fnmatch patterns; empty: every Dense and Conv2D"
    )

    @model_validator(mode="after")
    def _one_rule(self):
        if "energy" in self.model_fields_set and self.macs_removed is not None:
            raise ValueError("low_rank: give 'energy' or 'macs_removed', not both")
        return self


class ClusterStep(FineTune):
    """Weight clustering (tensorflow-model-optimization): every Conv2D and Dense kernel shares ``clusters`` values
    (tfmot leaves depthwise kernels alone), fine-tuned, then stripped. Smaller compressed; the interpreter runs the
    same dense work."""

    step: Literal["cluster"]
    clusters: int = Field(16, ge=2, le=256)
    init: Literal["kmeans_plus_plus", "linear", "density_based", "random"] = Field(
        "kmeans_plus_plus", description="where the centroids start"
    )


class RewriteStep(FineTune):
    """Replace an op a target's runtime lacks by an equivalent it runs (GELU, which tflite-micro has no kernel for:
    ``sigmoid`` x*sigmoid(1.702x), or its ``tanh`` form), then fine-tune ``epochs`` (default none)."""

    step: Literal["rewrite"]
    gelu: Literal["sigmoid", "tanh"] = "sigmoid"
    epochs: int = Field(0, ge=0, le=MAX_EPOCHS)


CompressStep = QatStep | PruneStep | LowRankStep | ClusterStep | FineTuneStep | RewriteStep


def step_label(step: dict) -> str:
    """A compression step's short name for logs and reports: qat, low_rank, cluster, prune magnitude, ..."""
    return f"prune {step['method']}" if step["step"] == "prune" else step["step"]


class Strategy(Strict):
    """A tf.distribute strategy for every fit: ``mirrored`` over local devices, or ``multi_worker``.

    ``multi_worker`` sets TF_CONFIG from ``cluster`` ({"worker": ["host:port", ...]}) and ``task_index``.
    """

    kind: Literal["default", "mirrored", "multi_worker"] = "default"
    cpu_devices: int | None = Field(
        None, ge=1, le=1024, description="mirrored: split the CPU into this many logical devices"
    )
    cluster: dict[str, list[str]] | None = None
    task_index: int = Field(0, ge=0, le=65_535)

    @model_validator(mode="after")
    def _cluster(self):
        if self.kind == "multi_worker" and not (self.cluster and self.cluster.get("worker")):
            raise ValueError("multi_worker needs 'cluster: {worker: [host:port, ...]}'")
        return self


CalibrationMethod = Literal["minmax", "mean_minmax", "percentile", "kl", "mse", "eq"]


class Smooth(Strict):
    """SmoothQuant: per-channel activation scale moved into the following Dense weights (``quantize.smooth``)."""

    alpha: float = Field(0.5, ge=0, le=1, description="migration strength: 0 none, 1 all into the weights")


class Int4Select(Strict):
    """4-bit weights on the candidates the measurement finds insensitive (``quantize.int4_select``)."""

    max_drop: float = Field(
        0.5,
        ge=0,
        le=100,
        description="points of top-1 on the calibration split the 4-bit weights may cost against all-int8",
    )
    min_snr_db: float = Field(
        30.0,
        ge=0,
        le=200,
        description="the SNR (dB) the model's output must keep against the all-int8 artifact's, on the calibration "
        "split, with every layer chosen in 4 bits",
    )


class QuantizeSpec(Strict):
    """``mode``/``io_type`` left out means: what each target profile needs. The calibration options apply to int8
    plans (the toolchain calibrates them itself; see README, "Quantization")."""

    mode: Literal["float32", "dynamic", "float16", "int8", "int16x8", "auto"] | None = Field(
        None,
        description="auto: per target, the cheapest plan that meets the acceptance gates (see README, Quantization)",
    )
    io_type: IOType | None = None
    per_channel: bool = True
    calibration_samples: int = Field(100, ge=1, le=MAX_SAMPLES)
    calibration: CalibrationMethod = Field(
        "minmax",
        description="how each activation range is chosen: minmax (absolute), mean_minmax (per batch, averaged), "
        "percentile, kl (entropy, as TensorRT), mse (least squared quantization error), eq (EasyQuant: each linear "
        "layer's input range and weight clipping searched for the best cosine of its int8 output)",
    )
    rounding: Literal["nearest", "adaround", "admm"] = Field(
        "nearest",
        description="how conv / dense weights go onto the grid: nearest (the quantizer's), adaround (learnt up or "
        "down per weight, Nagel et al. 2020), admm (grid weights reconstructing each layer's output, Leng et al. "
        "2018); both on the calibration split, 4-bit layers on their 4-bit grid",
    )
    percentile: float = Field(99.99, gt=50, le=100, description="calibration: percentile: the quantile kept")
    input_range: Literal["calibration", "training", "normalization"] = Field(
        "calibration",
        description="int8: where the model inputs' ranges come from: the calibration samples (as every tensor's), "
        "the training split (its 0.01-99.99 % range: calibration samples cannot widen it), or data.normalization "
        "(the range normalized pixels take)",
    )
    max_clipped: float | None = Field(
        0.01,
        ge=0,
        le=1,
        description="kl, percentile, mse: the largest share of a tensor's calibration values its range may clip (a "
        "percentile: at least the share it names); a range clipping more falls back to minmax for that tensor, "
        "with a warning naming it (null: no guard)",
    )
    activations: Literal["asymmetric", "symmetric"] = Field(
        "asymmetric", description="symmetric: zero point 0 on every int8 activation (some NPUs and DSPs need it)"
    )
    equalize: bool = Field(False, description="cross-layer equalization of consecutive conv/dense layers")
    bias_correction: bool = Field(False, description="correct the output shift weight quantization causes")
    smooth: Smooth | None = Field(
        None,
        description="int8: SmoothQuant before calibration: activation outlier channels of a LayerNorm or linear "
        "Dense feeding only Dense layers migrate into their weights (float function unchanged)",
    )
    float_layers: list[LayerPattern] = Field(
        default_factory=list,
        description="int8: Keras layer names (or fnmatch patterns) kept in float, for targets whose runtime falls "
        "back to float (a phone CPU); integer-only targets refuse them",
    )
    int16_layers: list[LayerPattern] = Field(
        default_factory=list,
        description="int8: Keras layer names (or fnmatch patterns) given 16-bit activations (8-bit weights), on "
        "targets whose runtime has int16 kernels for their ops (the profile's numerics.int16_ops)",
    )

    int4_layers: list[LayerPattern] = Field(
        default_factory=list,
        description="int8: Keras layer names (or fnmatch patterns) whose conv / dense weights are 4-bit (activations "
        "stay int8), on targets whose runtime runs 4-bit weights (the profile's numerics.int4_ops); ops the runtime "
        "cannot run so keep 8-bit weights",
    )
    int4_select: Int4Select | None = Field(
        None,
        description="int8, classification: of int4_layers (every conv / dense op when empty) only those whose 4-bit "
        "weights keep the calibration top-1 within max_drop points of all-int8, least sensitive first (measured)",
    )
    weight_bits: int = Field(
        8,
        description="the weights' bits: 8 (4-bit weights by layer: int4_layers / int4_select; 1- and 2-bit are "
        "refused: no runtime here executes binary or ternary convolutions, see README)",
    )

    @field_validator("weight_bits")
    @classmethod
    def _bits(cls, bits: int) -> int:
        if bits == 4:
            raise ValueError("4-bit weights go by layer: name them in int4_layers (or let int4_select choose)")
        if bits in (1, 2):
            raise ValueError(
                f"{'binary' if bits == 1 else 'ternary'} weights run on none of the toolchain's runtimes: LiteRT 2.3 "
                "and tflite-micro refuse Larq Compute Engine's binary ops, Vela leaves them on the CPU, the Edge TPU "
                "takes 8-bit models only, and LiteRT's own 2-bit convolution crashes (docs/binary-weights.md)"
            )
        if bits != 8:
            raise ValueError("the weights are 8-bit (4-bit by layer: int4_layers)")
        return bits

    @property
    def int4_patterns(self) -> list[str]:
        """The layers that are 4-bit or candidates for it."""
        return self.int4_layers or (["*"] if self.int4_select else [])

    @model_validator(mode="after")
    def _one_weight_method(self):
        if self.calibration == "eq" and self.rounding != "nearest":
            raise ValueError(
                f"calibration eq chooses the weights' scales itself: with rounding {self.rounding}, use another "
                "calibration method (eq and learnt rounding both set the weights)"
            )
        return self

    @property
    def mixed(self) -> bool:
        """Per-layer exceptions to int8."""
        return bool(self.float_layers or self.int16_layers or self.int4_patterns)

    @property
    def own_calibration(self) -> bool:
        """Options only the toolchain's calibration gives (the converter's own is plain min/max)."""
        return (
            self.calibration != "minmax"
            or self.rounding != "nearest"
            or self.activations != "asymmetric"
            or self.equalize
            or self.bias_correction
            or self.smooth is not None
            or self.input_range != "calibration"
        )


class Acceptance(Strict):
    max_accuracy_drop: float | None = Field(
        1.0, ge=0, description="classification: points of top-1 below the reference"
    )
    max_metric_drop: float | None = Field(
        None,
        ge=0,
        description="the task's headline metric (top-1, MAE, ROC AUC) worse than the reference by at most this",
    )
    min_top1_agreement: float | None = Field(
        None, ge=0, le=1, description="classification: of the top-1; language_model: of the next token, every step"
    )
    max_perplexity_increase: float | None = Field(
        None, ge=0, description="language_model: percent the perplexity may rise above the float reference's"
    )
    min_cosine: float | None = Field(None, ge=-1, le=1)
    min_snr_db: float | None = Field(None, description="signal-to-noise ratio of every output against the reference")
    max_size_kb: float | None = Field(None, gt=0)


class Recipe(Strict):
    schema_version: Literal[1]
    name: str = Field(pattern=NAME_PATTERN, description="the build folder's name")
    task: Task = "classification"
    model: ModelSpec
    data: DataSpec
    train: TrainSpec | None = None
    compress: list[Annotated[CompressStep, Field(discriminator="step")]] = Field(default_factory=list)
    strategy: Strategy = Strategy()
    quantize: QuantizeSpec = QuantizeSpec()
    targets: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(min_length=1, max_length=64)
    acceptance: Acceptance = Acceptance()
    search: SearchSpec | None = Field(None, description="toolchain search: the space, objectives and constraints")

    # Filled by the loader, not by the user.
    source: Path | None = Field(None, exclude=True)
    lines: dict[Any, int] = Field(default_factory=dict, exclude=True, repr=False)

    @model_validator(mode="after")
    def _one_qat_last(self):
        qat = [i for i, s in enumerate(self.compress) if s.step == "qat"]
        if len(qat) > 1 or (qat and qat[0] != len(self.compress) - 1):
            raise ValueError(
                "compress: 'qat' can appear once, as the last step (fake-quant nodes must see the final weights)"
            )
        return self

    @model_validator(mode="after")
    def _task_fits(self):
        kind = self.model.kind
        if kind != "keras" and self.train:  # compress steps on such a model: a CompressionError (config.loader)
            raise ValueError(
                f"{KIND_NAMES[kind]} model is used as trained: 'train' and 'compress' need a Keras model "
                "(train and compress it where it was written, then build it)"
            )
        q = self.quantize
        lm = (self.task == "language_model", self.model.application == "Decoder", self.data.text is not None)
        if any(lm) and not all(lm):
            raise ValueError(
                "a language model is 'task: language_model' with 'model: {application: Decoder}' and 'data: {text: "
                "FILE}', all three"
            )
        if lm[0] and (
            self.compress or q.own_calibration or q.mixed or q.mode not in (None, "int8", "int16x8", "float32")
        ):
            raise ValueError(
                "task language_model: quantize.mode int8, int16x8 or float32 (both signatures are calibrated "
                "together; the calibration options, mixed precision and compression steps do not apply yet)"
            )
        if q.smooth is not None and kind != "keras":
            raise ValueError(
                f"quantize.smooth: SmoothQuant rewrites a Keras model's weights; {KIND_NAMES[kind]} model has none "
                "to rewrite"
            )
        if any(s.step == "qat" for s in self.compress) and (q.own_calibration or q.mixed):
            raise ValueError(
                "quantize: QAT learns its ranges and converts every layer to int8: calibration, activations, "
                "equalize, bias_correction, smooth, float_layers, int16_layers and int4_layers do not apply"
            )
        if q.int4_select and self.task != "classification":
            raise ValueError("quantize.int4_select measures top-1: it applies to classifiers (task: classification)")
        if self.compress and self.task != "classification":
            raise ValueError("compress: the compression steps fine-tune classifiers (task: classification)")
        return self

    def line_of(self, *path: str | int) -> str:
        """``file:line`` of a field, for error messages."""
        return f"{self.source}:{self.lines.get(tuple(path), 1)}"
