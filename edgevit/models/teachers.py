"""Teachers: timm names (pretrained when the weights can be had), local checkpoints, ensembles,
`self` (the student's own architecture, trained first) and `run:NAME` (an earlier run's student).

A teacher whose classifier does not fit the dataset is fine-tuned on the training split and saved
in the run folder (`runs/<run>/teachers/<key>.pt`); a later run in the same runs folder with the
same teacher, data and fine-tune settings finds it there and skips the fine-tune. Teachers run in
eval mode under `torch.inference_mode()`, in the precision measured fastest for them (or the one asked).

A teacher that expects another resolution than the student's images is fed at its own size: each
member resizes the (already augmented) batch to its `img_size` (bilinear) after remapping the
normalisation, in distillation and in its fine-tune alike (`Resized`).

Ensembles average logits (`ensemble: logits`, the default) or probabilities (`ensemble: probs`,
returned as log-probabilities so the loss can treat them as logits: softmax(log p) = p).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import torch.nn.functional as F
from timm.task.distillation import DistillationTeacher
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models.students import check_model_name
from edgevit.train.speed import Precision

SELF = "self"
RUN_PREFIX = "run:"  # run:NAME = that run's student


def resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The batch at size x size (bilinear), or as it is when it has that size already (or None)."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class Resized(nn.Module):
    """A model fed at its own input size: what a teacher's fine-tune trains, so that it learns on
    the images it will label (the student's, resized)."""

    def __init__(self, model: nn.Module, size: int | None):
        super().__init__()
        self.model, self.size = model, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(resize(x, self.size))

    @classmethod
    def at(cls, model: nn.Module, size: int, data_size: int) -> nn.Module:
        """The model itself when the data has its size already, else the model Resized."""
        return model if size == data_size else cls(model, size)


def input_size(model: nn.Module, asked: int | None, data_size: int, pretrained: bool) -> int:
    """A teacher's input size: `asked` (teacher.img_size), else its pretrained config's input_size when
    it starts from pretrained weights, else the data's (a teacher trained here learns at that size)."""
    if asked is not None:
        return asked
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if pretrained else None
    return int(size[-1]) if size else data_size


class Teacher(nn.Module):
    """One or several frozen classifiers, called on the student's (normalised) input, each at its own
    input size (`sizes`, one per member; None: the input's size)."""

    def __init__(
        self,
        members: list[nn.Module],
        names: list[str],
        ensemble: str = "logits",
        precision: Precision = Precision(),
        student_mean=None,
        student_std=None,
        sizes: list[int | None] | None = None,
    ):
        super().__init__()
        self.members = nn.ModuleList(DistillationTeacher(m) for m in members)
        self.names, self.ensemble, self.precision = names, ensemble, precision
        self.sizes = list(sizes) if sizes is not None else [None] * len(members)
        mean = torch.tensor(student_mean or timm.data.IMAGENET_DEFAULT_MEAN).view(1, -1, 1, 1)
        std = torch.tensor(student_std or timm.data.IMAGENET_DEFAULT_STD).view(1, -1, 1, 1)
        self.register_buffer("student_mean", mean, persistent=False)
        self.register_buffer("student_std", std, persistent=False)
        precision.apply(self)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":  # a teacher never leaves eval mode (BN, dropout)
        return super().train(False)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.precision  # its own precision, whatever autocast the student's step runs under
        with torch.autocast(
            x.device.type, dtype=torch.float16 if p.amp == "fp16" else torch.bfloat16, enabled=p.amp != "off"
        ):
            x = p.input(x)
            outs = [
                m(resize(m.normalize_input(x, self.student_mean, self.student_std), size)).float()
                for m, size in zip(self.members, self.sizes)
            ]
        if len(outs) == 1:
            return outs[0]
        stacked = torch.stack(outs)
        if self.ensemble == "probs":
            return stacked.softmax(-1).mean(0).log()
        return stacked.mean(0)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """True when huggingface.co answers within `timeout`, DNS included: never hang offline."""
    import urllib.request

    result: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request("https://huggingface.co", method="HEAD"), timeout=timeout)
            result.append(True)
        except Exception:  # noqa: BLE001 - any failure means "not reachable now"
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1)
    return bool(result and result[0])


def _cached_weights(name: str) -> str | None:
    """The pretrained file of a timm name in the local Hugging Face cache, without any network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown tag
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, fname)
        if isinstance(path, str):
            return path
    return None


def _saved_num_classes(config: Path) -> int | None:
    """num_classes of a timm config.json (what `save_for_hf` writes beside the weights), if readable."""
    try:
        value = json.loads(config.read_text()).get("num_classes")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def create_pretrained(name: str, num_classes: int, log: Callable[[str], None]) -> tuple[nn.Module, bool]:
    """A timm model with pretrained weights from the local HF cache or the hub; else random init.

    Returns (model, pretrained). timm resets the classifier when `num_classes` differs.
    """
    check_model_name(name)
    cached = _cached_weights(name)
    if cached:
        overlay: dict[str, Any] = {"file": cached}
        saved = _saved_num_classes(Path(cached).parent / "config.json")
        if saved is not None:  # the file's own head (a fine-tuned upload): kept when it fits the data
            overlay["num_classes"] = saved
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay)
        log(f"teacher {name}: pretrained weights from the local cache ({cached})")
        return model, True
    if _hub_reachable():
        try:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes)
            log(f"teacher {name}: pretrained weights from the Hugging Face hub")
            return model, True
        except Exception as exc:  # noqa: BLE001 - no pretrained tag, or the download failed
            log(f"teacher {name}: could not download pretrained weights ({type(exc).__name__})")
    log(f"teacher {name}: no pretrained weights (offline and none cached); it starts from random weights")
    return timm.create_model(name, pretrained=False, num_classes=num_classes), False


def load_checkpoint_into(model: nn.Module, path: str | Path) -> bool:
    """Load a user's checkpoint (weights_only). Returns True when the classifier had to be reset
    because its shape does not fit; any other mismatch is an error naming the first bad tensor."""
    path = Path(path)
    if not path.is_file():
        raise EdgevitError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EdgevitError(
            f"{path} is not a PyTorch checkpoint that can be loaded safely ({type(exc).__name__}); "
            f"save it with torch.save(model.state_dict(), path)"
        ) from None
    state = blob
    if isinstance(blob, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
            if isinstance(blob.get(key), dict):
                state = blob[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgevitError(f"{path} holds no state_dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    head = {f"{n}.{p}" for n in _classifier_names(model) for p in ("weight", "bias")}
    reset_head = False
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            if k in head:
                reset_head = True
                continue
            raise EdgevitError(
                f"{path}: tensor '{k}' has shape {tuple(v.shape)} but the model wants "
                f"{tuple(own[k].shape)}; is this checkpoint for another architecture?"
            )
    state = {k: v for k, v in state.items() if not (reset_head and k in head)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        bad = (missing or unexpected)[0]
        raise EdgevitError(
            f"{path}: checkpoint does not fit the model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors, e.g. '{bad}')"
        )
    return reset_head


def _classifier_names(model: nn.Module) -> list[str]:
    names = []
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier", "head")
    for c in classifier if isinstance(classifier, (list, tuple)) else [classifier]:
        names.append(c)
    if hasattr(model, "head_dist"):
        names.append("head_dist")
    if hasattr(model, "backbone"):  # edgevit's DistilledHeadStudent
        names += [f"backbone.{n}" for n in _classifier_names(model.backbone)]
    return names


def teacher_key(spec: dict[str, Any]) -> str:
    """A short hash of everything that makes a fine-tuned teacher what it is."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_cached_teacher(runs_root: Path, key: str) -> Path | None:
    """A fine-tuned teacher with this key in any run folder of this runs root."""
    hits = sorted(runs_root.glob(f"*/teachers/{key}.pt"), key=lambda p: p.stat().st_mtime)
    return hits[-1] if hits else None


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_student(runs_root: Path, spec: str, class_names: list[str]) -> tuple[nn.Module, Path]:
    """`run:NAME` (or run:PATH): an earlier run's student as a teacher; its heads average as at inference."""
    from edgevit.models.checkpoint import STUDENT_FILE, load_student

    name = spec[len(RUN_PREFIX) :]
    folder = Path(name) if Path(name).is_dir() else runs_root / name
    if not (folder / STUDENT_FILE).is_file():
        known = sorted(p.parent.name for p in runs_root.glob(f"*/{STUDENT_FILE}")) if runs_root.is_dir() else []
        raise EdgevitError(
            f"teacher {spec}: no finished run '{name}' in {runs_root} (runs with a student: "
            f"{', '.join(known) or 'none'})"
        )
    model, meta = load_student(folder)
    if list(meta.get("class_names", [])) != list(class_names):
        raise EdgevitError(
            f"teacher {spec} was trained on other classes ({len(meta.get('class_names', []))}) "
            f"than this data ({len(class_names)}); distil from a run on the same data"
        )
    return model, folder / STUDENT_FILE
