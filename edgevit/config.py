"""Recipes (how to train) and targets (where to deploy) are YAML files validated by pydantic.

A bad field gives one line naming the file, the field and what is allowed (see `_explain`).
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgevit.errors import EdgevitError
from edgevit.paths import recipes_dirs, targets_dirs
from edgevit.vocab import Amp, DistillType, Importance, Precision, PruneAttention, PruneBy, Scheme


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _yaml_off(v: Any) -> Any:
    """YAML 1.1 reads a bare `off` as false: `amp: off` means the setting, not a type error."""
    return "off" if v is False else v


# ----------------------------------------------------------------------------------------- recipes
class DataConfig(_Strict):
    spec: str = Field(
        "digits", description="digits | PATH (ImageFolder) | cifar10[:ROOT] | cifar100[:ROOT] | hf:NAME_OR_PATH"
    )
    img_size: int = Field(32, ge=8, le=1024, description="training and evaluation image size in pixels (square)")
    batch_size: int = Field(64, ge=1, description="training batch size (per process under torchrun)")
    workers: int = Field(0, ge=0, description="data-loading worker processes; 0: load in the training process")
    image_column: str | None = Field(None, description="hf: datasets: the image column (None: found by feature type)")
    label_column: str | None = Field(None, description="hf: datasets: the label column (None: found by feature type)")
    labelled: float = Field(
        1.0,
        gt=0,
        le=1,
        description="fraction of the training split whose labels are used "
        "(stratified, fixed); teachers and a student without a teacher see only those images, "
        "a distilled student sees every image and learns the rest from the teacher",
    )


class AugConfig(_Strict):
    """DeiT-style augmentation; every field maps onto timm's create_transform / Mixup."""

    auto_augment: str | None = Field(
        "rand-m9-mstd0.5-inc1", description="timm auto-augment policy, e.g. RandAugment rand-m9-mstd0.5-inc1; None: off"
    )
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    scale: tuple[float, float] = Field(
        (0.08, 1.0), description="random-resized-crop area range, as a share of the image"
    )
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="random-resized-crop aspect-ratio range")
    color_jitter: float = Field(
        0.3, ge=0, description="colour-jitter strength (timm; ignored when auto_augment is set)"
    )
    reprob: float = Field(0.25, ge=0, le=1, description="random-erasing probability")
    mixup: float = Field(0.8, ge=0, description="Mixup alpha; 0: off")
    cutmix: float = Field(1.0, ge=0, description="CutMix alpha; 0: off")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="probability that a batch gets Mixup or CutMix")
    mixup_switch_prob: float = Field(
        0.5, ge=0, le=1, description="probability of CutMix instead of Mixup when both are on"
    )
    smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the true labels")
    crop_pct: float = Field(0.875, gt=0, le=1, description="evaluation centre-crop share of the resized image")
    repeated_aug: bool = Field(
        False,
        description="DeiT's repeated augmentation: each image 3 times per epoch, "
        "differently augmented (timm's RepeatAugSampler)",
    )


class TeacherConfig(_Strict):
    names: list[str] = Field(
        default_factory=lambda: ["regnety_160"],
        min_length=1,
        description="timm names, 'self', or 'run:NAME' (an earlier run's student)",
    )
    checkpoints: list[str] = Field(default_factory=list, description="one local checkpoint per name, or none")
    pretrained: bool = True
    img_size: int | None = Field(
        None,
        ge=8,
        description="the teachers' input size: the student's images are resized to it (in the fine-tune too); "
        "None: a pretrained teacher's own input size (its pretrained config's), else data.img_size",
    )
    ensemble: Literal["logits", "probs"] = "logits"
    finetune_epochs: int = Field(
        10,
        ge=0,
        description="fine-tune of a teacher whose head does not fit the data; "
        "`self` instead trains for the recipe's epochs with the student's optimizer",
    )
    finetune_lr: float = Field(1e-3, gt=0, description="absolute (not scaled by batch size)")
    finetune_aug: Literal["recipe", "light"] = Field(
        "recipe",
        description="recipe: the student's augmentation, so the teacher's labels hold on what the "
        "student sees; light: crops only",
    )
    amp: Amp = Field("auto", description="the teacher's precision (its forward, and its fine-tune); auto: measured")
    channels_last: Literal["auto"] | bool = "auto"
    fused_attn: Literal["auto"] | bool = Field(
        "auto",
        description="a ViT teacher's attention: PyTorch's fused kernel (true) or explicit (false); auto: measured",
    )
    checkpoint_every_s: float = Field(
        300.0,
        ge=0,
        description="checkpoint a teacher's fine-tune at most this often "
        "(its state can be ~1 GB) and at its end; 0: after every epoch",
    )

    @field_validator("names", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    _amp_off = field_validator("amp", mode="before")(_yaml_off)


class StudentConfig(_Strict):
    name: str = Field(
        "deit_tiny_distilled_patch16_224",
        description="a timm model name; DeiT *_distilled_* models use their distillation token, others get a "
        "second head on the pooled features",
    )
    patch_size: int | None = Field(None, ge=1, description="None: follow the image size (4 at 32 px, 16 at 224 px)")
    drop_path: float = Field(0.1, ge=0, lt=1, description="stochastic-depth rate")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model arguments")
    checkpoint: str | None = Field(None, description="initial student weights (a path); None: random init")


class FeatureLayer(_Strict):
    teacher: str = Field(description="module path in the teacher, e.g. layer4 or stages.3")
    student: str = Field(description="module path in the student, e.g. blocks.5")
    weight: float = Field(1.0, ge=0)


class FeatureConfig(_Strict):
    """distill.type feature: intermediate maps matched through learned 1x1 projectors."""

    layers: list[FeatureLayer] = Field(
        default_factory=list,
        description="teacher/student layer pairs; empty: the teacher's deepest stage with the student's deepest block",
    )
    loss: Literal["mse", "cosine"] = "mse"


class AttentionBlock(_Strict):
    teacher: str = Field(description="an attention block of the teacher, e.g. blocks.11 (or blocks.11.attn)")
    student: str = Field(description="an attention block of the student, e.g. blocks.3 (or blocks.3.attn)")
    weight: float = Field(1.0, ge=0)


class AttentionConfig(_Strict):
    """distill.type attention: the student's attention maps match a ViT teacher's (no learned parameters)."""

    blocks: list[AttentionBlock] = Field(
        default_factory=list,
        description="teacher/student attention block pairs; empty: the teacher's last with the student's last",
    )
    loss: list[Literal["kl", "value"]] = Field(
        default_factory=lambda: ["kl"],
        min_length=1,
        description="kl: KL between the head-averaged attention maps; value: MiniLM-v2's value-relation KL "
        "(the teacher's head count as relation heads); [kl, value]: both",
    )
    weight: float = Field(1.0, ge=0, description="the attention loss's weight, added to the DeiT hard loss")

    @field_validator("loss", mode="before")
    @classmethod
    def _one_loss_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else list(dict.fromkeys(v)) if isinstance(v, (list, tuple)) else v


class DistillConfig(_Strict):
    type: DistillType = Field(
        "hard",
        description="none | soft (tau^2 KL) | hard (the teacher's argmax, DeiT) | dkd (decoupled KD: target and "
        "non-target parts weighted by dkd_alpha and dkd_beta), on the student's distillation head | feature "
        "(hard plus intermediate features, see features) | attention (hard plus a ViT teacher's attention maps, "
        "see attention)",
    )
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term against the label term")
    tau: float = Field(1.0, gt=0, description="softmax temperature of soft and dkd")
    dkd_alpha: float = Field(1.0, ge=0, description="dkd: weight of the target-class part (TCKD)")
    dkd_beta: float = Field(
        8.0, ge=0, description="dkd: weight of the non-target part (NCKD); the paper's 8 on CIFAR, 0.5 on ImageNet"
    )
    standardize: bool = Field(
        False,
        description="soft/dkd: z-score teacher and student logits before the temperature softmax "
        "(logit standardisation, Sun et al. 2024)",
    )
    cache_teacher: Literal["auto"] | bool = Field(
        "auto",
        description="store the teacher's top-k logits per augmentation round; auto: when rounds repeat "
        "within the run (cache_rounds < epochs), so the teacher runs once per round instead of every epoch",
    )
    cache_topk: int = Field(10, ge=1)
    cache_rounds: int | None = Field(
        None,
        ge=1,
        description="distinct augmentation rounds; epoch e replays "
        "round e % rounds (None: one per epoch, so only later students reuse)",
    )

    features: FeatureConfig | None = Field(None, description="type feature: which layers, which loss")
    attention: AttentionConfig | None = Field(
        None, description="type attention: which blocks, which loss (default: last blocks, kl)"
    )

    @model_validator(mode="after")
    def _combinations(self) -> "DistillConfig":
        if self.standardize and self.type not in ("soft", "dkd"):
            raise ValueError(f"standardize applies to soft and dkd distillation, not {self.type!r}")
        if self.features is not None and self.type != "feature":
            raise ValueError(f"a features section needs type feature, not {self.type!r}")
        if self.attention is not None and self.type != "attention":
            raise ValueError(f"an attention section needs type attention, not {self.type!r}")
        if self.type in ("feature", "attention") and self.cache_teacher is True:
            needs = {
                "feature": "a feature loss needs the live teacher's features",
                "attention": "an attention loss needs the live teacher's attention maps",
            }[self.type]
            raise ValueError(f"{needs} every step, so no teacher-logit cache: set cache_teacher to auto or false")
        return self


class OptimConfig(_Strict):
    opt: str = Field("adamw", description="a timm optimizer name (timm.optim.create_optimizer_v2)")
    lr: float = Field(5e-4, gt=0, description="at lr_base_batch; scaled linearly with the batch size")
    lr_base_batch: int = Field(512, ge=1, description="the batch size lr is given for")
    weight_decay: float = Field(0.05, ge=0, description="decoupled weight decay (norms and biases excluded)")
    momentum: float = Field(0.9, description="momentum, for the optimizers that have one (sgd, ...)")
    sched: str = Field(
        "cosine", description="a timm scheduler name (timm.scheduler.create_scheduler_v2), stepped per step"
    )
    warmup_epochs: int = Field(5, ge=0, description="linear warm-up epochs from warmup_lr")
    warmup_lr: float = Field(1e-6, ge=0, description="learning rate at the start of the warm-up")
    min_lr: float = Field(1e-5, ge=0, description="learning rate at the end of the schedule")
    clip_grad: float | None = Field(None, gt=0, description="gradient-norm clipping; None: off")


class PruneConfig(_Strict):
    """`edgevit prune`: structured pruning of the distilled student, then recovery by distillation."""

    ratio: float = Field(0.5, gt=0, lt=1, description="share of the student's MACs (or params) to remove")
    by: PruneBy = Field("macs", description="what ratio counts: MACs or parameters")
    importance: Importance = Field(
        "taylor", description="channel importance: |w * dL/dw| over 8 batches, L2 magnitude, or a Hessian estimate"
    )
    isomorphic: bool = Field(False, description="rank channels globally within isomorphic groups (Torch-Pruning)")
    attention: PruneAttention = Field(
        "dims", description="what attention loses: head dims (the same in every head), whole heads, or both"
    )
    embed: bool = Field(
        False, description="also the DeiT embedding width (PVT-v2 and ConvMixer always prune their stage channels)"
    )
    steps: int = Field(1, ge=1, description="prune a little, recover a little, this many times")
    recover_epochs: int = Field(10, ge=0, description="distillation epochs after pruning, over all steps")
    recover_teacher: Literal["teacher", "student", "none"] = Field(
        "teacher", description="teacher: the run's teacher; student: the unpruned student; none: labels only"
    )
    lr: float | None = Field(None, gt=0, description="recovery lr at optim.lr_base_batch (None: the recipe's)")
    warmup_epochs: int = Field(1, ge=0, description="recovery warm-up epochs")


class CompressConfig(_Strict):
    """`edgevit compress`: the most accurate pruned x precision candidate whose latency, measured on
    the target, meets a budget."""

    target: str | None = Field(None, description="the hardware target (a name in targets/ or a YAML path)")
    latency_budget_ms: list[float] = Field(
        default_factory=list,
        description="budget(s) in ms per image: median latency on the target; one search serves all",
    )
    device: str = Field("local", description="where candidates are timed: local, or ssh://user@host[:port]")
    threads: int | None = Field(None, ge=1, description="runtime threads (None: this machine's core count)")
    precisions: list[Precision] | None = Field(
        None, description="precisions to search (None: every one the target produces)"
    )
    depths: list[float] = Field(
        [1.0, 0.67, 0.5, 0.34],
        description="depths to try, as shares of the parent's blocks (DeiT, ConvMixer, PVT-v2 over its stages; "
        "the least useful blocks go)",
    )
    keeps: list[float] = Field(
        [1.0, 0.7, 0.5, 0.35],
        description="width keeps to try: the share of each block's MACs kept (Torch-Pruning, widths and embedding)",
    )
    round_to: int | None = Field(
        None, ge=1, description="round pruned widths to multiples of this (see docs/results for whether it pays)"
    )
    estimate_epochs: int = Field(1, ge=0, description="short recovery that ranks every architecture")
    recover_epochs: int = Field(10, ge=0, description="full recovery by distillation of the finalists")
    finalists: int = Field(2, ge=1, description="architectures fully recovered per budget (the best estimates)")
    recover_teacher: Literal["teacher", "student", "none"] = Field(
        "teacher", description="teacher: the run's teacher; student: the unpruned student; none: labels only"
    )
    max_drop: float | None = Field(
        None, ge=0, le=100, description="a pick may lose at most this many top-1 points against the parent"
    )
    int8: Literal["tune", "ptq"] = Field(
        "tune",
        description="INT8 finalists: tune = the accuracy-aware tuner (as `edgevit quantize --method tune`), "
        "ptq = the export's plain post-training quantization (what every candidate is estimated with)",
    )
    int8_max_drop: float = Field(
        0.5, ge=0, lt=100, description="tune: top-1 points an INT8 finalist may lose against the same one in FP32"
    )
    rounds: int = Field(5, ge=1, description="interleaved timing rounds per candidate")
    iterations: int = Field(300, ge=10, description="timed calls per candidate, spread over the rounds")
    min_margin: float = Field(
        0.02, ge=0, lt=1, description="least share of the budget kept free; the measured spread may raise it"
    )

    @field_validator("latency_budget_ms", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        return [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value

    @field_validator("latency_budget_ms")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not v > 0 or v != v]
        if bad:
            raise ValueError(f"a latency budget must be milliseconds above 0, got {bad[0]}")
        return value

    @field_validator("depths", "keeps")
    @classmethod
    def _shares(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < v <= 1 for v in value):
            raise ValueError(f"every share must be in (0, 1], got {value}")
        return value


class Recipe(_Strict):
    name: str = Field("recipe", description="the recipe's name (a shipped recipe: its file name)")
    description: str = Field("", description="one line, shown by `edgevit recipes`")
    epochs: int = Field(300, ge=1, description="the student's training epochs")
    seed: int = Field(0, description="seeds the weights, the data order and every augmentation")
    amp: Amp = Field(
        "auto", description="the student's autocast; auto: the fastest of fp32/bf16 in a short probe on this machine"
    )
    channels_last: Literal["auto"] | bool = Field(
        "auto", description="the student in channels_last memory format (convolutional models); auto: measured"
    )
    fused_attn: Literal["auto"] | bool = Field(
        "auto", description="the student's attention: PyTorch's fused kernel (true) or explicit (false); auto: measured"
    )
    data: DataConfig = Field(default_factory=DataConfig, description="the dataset and how it is loaded")
    aug: AugConfig = Field(default_factory=AugConfig, description="training augmentation (timm)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="the teacher(s) and their fine-tune")
    student: StudentConfig = Field(default_factory=StudentConfig, description="the student architecture")
    distill: DistillConfig = Field(
        default_factory=DistillConfig, description="the distillation loss and the teacher-logit cache"
    )
    optim: OptimConfig = Field(default_factory=OptimConfig, description="optimizer and learning-rate schedule")
    prune: PruneConfig | None = Field(None, description="prune the distilled student (edgevit prune)")
    compress: CompressConfig | None = Field(
        None, description="search pruned x precision candidates under a latency budget (edgevit compress)"
    )

    _amp_off = field_validator("amp", mode="before")(_yaml_off)


# ----------------------------------------------------------------------------------------- targets
class QuantConfig(_Strict):
    scheme: Scheme = Field(
        "static", description="INT8 activations: static (calibrated), dynamic (per inference) or weight-only (none)"
    )
    calibration_samples: int = Field(128, ge=1, description="training images used to calibrate static INT8")
    per_channel: bool = Field(True, description="per-channel weight scales (false: per tensor)")
    method: str | None = Field(None, description="calibration method, e.g. minmax | entropy | percentile")
    options: dict[str, Any] = Field(
        default_factory=dict, description="format-specific quantizer options (see each module in edgevit/export/)"
    )


class DeviceConfig(_Strict):
    kind: Literal["local", "ssh"] = Field(
        "local", description="local: profile on this machine; ssh: on the device at host"
    )
    host: str | None = Field(None, description="the device's host name or address (kind: ssh)")
    user: str | None = Field(None, description="the SSH user on the device")
    port: int = Field(22, ge=1, le=65535, description="the device's SSH port")
    workdir: str = Field(
        "/tmp", description="where a temporary folder for the artifact is made on the device (removed after)"
    )
    tool: str | None = Field(None, description="device-side tool, e.g. trtexec or 'python3 -m edgevit.profile.agent'")


class Target(_Strict):
    name: str = Field(description="the target's name, as --target takes it")
    description: str = Field("", description="one line, shown by `edgevit targets`")
    aliases: list[str] = Field(default_factory=list, description="other names --target accepts (e.g. jetson)")
    format: str = Field(description="an export format of the registry (edgevit.formats.FORMATS)")
    precision: Precision = Field("fp32", description="the precision exported when none is asked for")
    precisions: list[Precision] = Field(
        default_factory=lambda: ["fp32"], description="the precisions this target exports (--precision all)"
    )
    input_size: int | None = Field(None, ge=8, description="None: the run's training size")
    batch: int = Field(1, ge=1, description="the exported batch size")
    dynamic_batch: bool = Field(False, description="export with a dynamic batch dimension (where the format allows it)")
    opset: int = Field(17, ge=13, description="ONNX opset for ONNX-based formats (17 keeps LayerNormalization one op)")
    quantization: QuantConfig = Field(default_factory=QuantConfig, description="how INT8 is made")
    runtime: dict[str, Any] = Field(default_factory=dict, description="runtime options, e.g. threads, hints")
    device: DeviceConfig = Field(default_factory=DeviceConfig, description="where `edgevit profile` times it")
    device_name: str = Field("", description="the hardware this target stands for, in words")

    @field_validator("format")
    @classmethod
    def _registered_format(cls, v: str) -> str:
        from edgevit.formats import FORMATS  # the registry is the one list of formats

        if v not in FORMATS:
            raise ValueError(f"unknown format {v!r}; known: {', '.join(FORMATS)}")
        return v


# ----------------------------------------------------------------------------------------- loading
def _explain(path: Path, model: type[BaseModel], err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        parent: Any = model
        for part in e["loc"][:-1]:
            field = (
                parent.model_fields.get(str(part))
                if isinstance(parent, type) and issubclass(parent, BaseModel)
                else None
            )
            parent = field.annotation if field is not None else None
            # an optional section (`prune: PruneConfig | None`): its model is the non-None member
            parent = next(
                (a for a in typing.get_args(parent) if isinstance(a, type) and issubclass(a, BaseModel)), parent
            )
        allowed = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{path}: unknown field '{loc}'{hint}; allowed here: {', '.join(allowed)}"
    got = e.get("input")
    got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
    return f"{path}: field '{loc}': {e['msg']}{got_s}"


def _read_yaml(path: Path) -> dict[str, Any]:
    """A recipe or target file as a mapping; an empty, cut-off or garbled file is one line naming it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EdgevitError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise EdgevitError(f"{path} is not a YAML text file (binary content); restore it or write it again") from None
    if not text.strip():
        raise EdgevitError(f"{path} is empty; restore it or write its fields (see `edgevit recipes --paths`)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgevitError(
            f"{path}: not valid YAML{where} (cut off or garbled?): {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, dict):
        raise EdgevitError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def check_fields(model: type[BaseModel], values: dict[str, Any], what: str) -> Any:
    """A stage's options validated by the pydantic model that defines them (the one place an option's
    rules live): the model, or an `EdgevitError` naming the parameter (`prune: lr must be > 0 ...`)."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        e = err.errors()[0]
        param = ".".join(str(p) for p in e["loc"] if not isinstance(p, int)) or None  # budgets.0 -> budgets
        msg = e["msg"][0].lower() + e["msg"][1:]
        raise EdgevitError(f"{what} option {param}: {msg} (got {e.get('input')!r})", param=param) from None


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise EdgevitError(_explain(path, model, err)) from None


def _find(name_or_path: str, dirs: list[Path], kind: str, aliases: dict[str, Path] | None = None) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise EdgevitError(f"{kind} file {p} does not exist")
        return p
    known = {f.stem: f for d in reversed(dirs) for f in sorted(d.glob("*.yaml"))}  # the working directory wins
    known = {**(aliases or {}), **known}
    if name_or_path in known:
        return known[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise EdgevitError(f"unknown {kind} '{name_or_path}'{hint} (known: {', '.join(sorted(known)) or 'none'})")


def load_recipe(name_or_path: str | None = None) -> tuple[Recipe, Path | None]:
    """A shipped recipe by name, a YAML path, or (None) the quickstart recipe."""
    path = _find(name_or_path or "quickstart", recipes_dirs(), "recipe")
    return _validate(Recipe, _read_yaml(path), path), path


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """CLI flags override recipe fields: keys are dotted paths ('optim.lr'); None means not given."""
    data = recipe.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return _validate(Recipe, data, Path("<command line>"))


def list_recipes() -> list[tuple[str, Path, Recipe | str]]:
    out = []
    for d in recipes_dirs():
        for f in sorted(d.glob("*.yaml")):
            try:
                out.append((f.stem, f, _validate(Recipe, _read_yaml(f), f)))
            except EdgevitError as exc:
                out.append((f.stem, f, str(exc)))
    return out


def _target_aliases() -> dict[str, Path]:
    aliases: dict[str, Path] = {}
    for d in targets_dirs():
        for f in sorted(d.glob("*.yaml")):
            try:
                for a in _read_yaml(f).get("aliases", []) or []:
                    aliases[str(a)] = f
            except EdgevitError:
                continue
    return aliases


def load_target(name_or_path: str) -> Target:
    """A shipped target by name or alias (e.g. 'jetson'), or a YAML path."""
    path = _find(name_or_path, targets_dirs(), "target", _target_aliases())
    return _validate(Target, _read_yaml(path), path)


def list_targets() -> list[tuple[str, Path, Target | str]]:
    out = []
    for d in targets_dirs():
        for f in sorted(d.glob("*.yaml")):
            try:
                out.append((f.stem, f, _validate(Target, _read_yaml(f), f)))
            except EdgevitError as exc:
                out.append((f.stem, f, str(exc)))
    return out
