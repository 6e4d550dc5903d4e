"""Quantization-aware distillation: PT2E fake-quant training against the FP32 model, then each
target's own INT8 format.

The student is captured with `torch.export` (dynamic batch), fake-quantized by a PT2E quantizer
(torchao `prepare_qat_pt2e`), trained for a few epochs with soft distillation from a frozen teacher
(the FP32 student itself by default) plus the labels, then converted (`convert_pt2e`):
- LiteRT: litert-torch's own PT2E quantizer (int8 symmetric per-channel weights, int8 activations,
  TFLite's fixed softmax ranges) and `litert_torch.convert(..., quant_config=...)`: a static INT8
  flatbuffer with an int8 input;
- ONNX Runtime, TensorRT, OpenVINO: a quantizer of our own that puts symmetric int8 Q/DQ (zero point
  0, what TensorRT requires; per-channel weights) on the inputs of every linear and convolution, then
  the dynamo ONNX exporter (Q/DQ ONNX). TensorRT builds its engine from that ONNX; OpenVINO reads
  it (Q/DQ become FakeQuantize).

The training loop sits behind `train(...)`; when the Core v2 Trainer lands it becomes
Trainer + DistillationTask (see the TODO there).
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgevit import formats
from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError
from edgevit.quantize.search import top1

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------ quantizers
def linear_conv_quantizer() -> Any:
    """PT2E QAT quantizer: symmetric int8 fake-quant on the inputs and weights of linear/conv ops."""
    from torchao.quantization.pt2e import (
        FusedMovingAvgObsFakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec, Quantizer

    act = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, eps=2**-12
        ),
    )
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, eps=2**-12
        ),
    )
    targets = {torch.ops.aten.linear.default, torch.ops.aten.conv2d.default}

    class LinearConvQuantizer(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target in targets:
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: act, node.args[1]: weight}, _annotated=True
                    )
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            return None

    return LinearConvQuantizer()


def litert_quantizer() -> Any:
    """litert-torch's PT2E quantizer for QAT. Its conv+BN QAT patterns fail to trace with torch 2.14
    (`_get_aten_graph_module_for_pattern` gets a function, not a module); the students have no
    BatchNorm, so those patterns are skipped."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class NoConvBNQuantizer(PT2EQuantizer):
        STATIC_QAT_ONLY_OPS: list[str] = []

    return NoConvBNQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


# ------------------------------------------------------------------------------------ training
def prepare(model: torch.nn.Module, sample: torch.Tensor, quantizer: Any) -> torch.fx.GraphModule:
    """Capture the eval-mode graph with a dynamic batch and insert fake quantization."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    x = sample.repeat(2, 1, 1, 1) if sample.shape[0] == 1 else sample  # a batch of 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(copy.deepcopy(model).eval(), (x,), dynamic_shapes=({0: batch},)).module()
        return prepare_qat_pt2e(graph, quantizer)


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float, tau: float
) -> torch.Tensor:
    """(1 - alpha) CE(labels) + alpha tau^2 KL(teacher || student) at temperature tau."""
    kd = (
        F.kl_div(
            F.log_softmax(student / tau, 1), F.log_softmax(teacher / tau, 1), reduction="batchmean", log_target=True
        )
        * tau
        * tau
    )
    return (1 - alpha) * F.cross_entropy(student, labels) + alpha * kd


def train(
    qmodel: torch.fx.GraphModule,
    teacher: Callable[[torch.Tensor], torch.Tensor],
    train_set: Any,
    epochs: int,
    *,
    batch_size: int = 64,
    lr: float = 1e-4,
    alpha: float = 0.5,
    tau: float = 1.0,
    steps: int | None = None,
    calibration: np.ndarray | None = None,
    seed: int = 0,
    log: Log = print,
) -> list[dict]:
    """A plain distillation loop over a fake-quantized graph (observers frozen for the last epoch).

    TODO(core Trainer): when the "train:" commit lands on `core`, run this as
    Trainer(DistillationTask(qmodel, teacher, kind="soft", alpha=alpha, tau=tau), train_set, None, cfg).
    `steps` caps the optimizer steps (a smoke test); `calibration` images initialise the observers.
    """
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_train

    move_exported_model_to_train(qmodel)
    if calibration is not None and len(calibration):
        with torch.no_grad():
            for i in range(0, len(calibration), batch_size):
                qmodel(torch.from_numpy(calibration[i : i + batch_size]))
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_set) > batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    total = min(steps or math.inf, epochs * len(loader))
    opt = torch.optim.AdamW([p for p in qmodel.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1)))
    )
    rows, step = [], 0
    for epoch in range(epochs):
        if epochs > 1 and epoch == epochs - 1:
            qmodel.apply(disable_observer)  # fix the ranges; the weights settle to them
        losses = []
        for x, y in loader:
            with torch.no_grad():
                t = teacher(x).clone()  # a Teacher answers in inference mode; autograd needs a plain tensor
            loss = distill_loss(qmodel(x), t, y, alpha, tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if step >= total:
                break
        rows.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "steps": step})
        log(f"  QAT epoch {epoch + 1}/{epochs}: loss {rows[-1]['loss']:.4f} ({step} steps)")
        if step >= total:
            break
    return rows


# ------------------------------------------------------------------------------------ per target
def to_onnx_qdq(converted: torch.fx.GraphModule, sample: torch.Tensor, path: Path, opset: int) -> Any:
    """The converted PT2E graph as Q/DQ ONNX (dynamo exporter: quantized_decomposed ops -> Q/DQ)."""
    import onnx

    from edgevit.export.onnx import INPUT, OUTPUT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            converted,
            (sample,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            verbose=False,
        )
    model = onnx.load(str(path))  # the dynamo exporter puts weights in <name>.data: keep one self-contained file
    onnx.save(model, str(path), save_as_external_data=False)
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise EdgevitError("the QAT model exported to ONNX without Q/DQ nodes")
    return model


def convert(qmodel: torch.fx.GraphModule, fold_quantize: bool = True) -> torch.fx.GraphModule:
    """The trained fake-quant graph in eval mode, converted to quantize/dequantize ops (PT2E)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(qmodel)
    return convert_pt2e(qmodel, fold_quantize=fold_quantize)


def run(
    model: torch.nn.Module,
    teacher: torch.nn.Module | None,
    sample: torch.Tensor,
    target: Target,
    train_set: Any,
    calibration: np.ndarray | None,
    val_x: np.ndarray,
    val_y: np.ndarray,
    reference: np.ndarray,
    max_drop: float,
    out_dir: Path,
    *,
    epochs: int = 3,
    steps: int | None = None,
    lr: float = 1e-4,
    batch_size: int = 64,
    alpha: float = 0.5,
    log: Log = print,
) -> tuple[Artifact, dict[str, Any]]:
    """Prepare, distil, convert and export; returns the artifact and what its manifest records."""
    spec = formats.get(target.format)
    if spec.qat_export is None:
        raise EdgevitError(f"quantization-aware training has no exporter for the {target.format} format", "target")
    quantizer = spec.qat_quantizer()
    qmodel = prepare(model, sample, quantizer)
    frozen = copy.deepcopy(teacher if teacher is not None else model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    log(
        f"QAT: {epochs} epoch(s) of distillation from the {'FP32 student' if teacher is None else 'run teacher'}"
        f" on {len(train_set)} training images"
    )
    rows = train(
        qmodel,
        frozen,
        train_set,
        epochs,
        batch_size=batch_size,
        lr=lr,
        alpha=alpha,
        steps=steps,
        calibration=calibration,
        log=log,
    )
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(qmodel)
    with torch.no_grad():
        fake = np.concatenate([qmodel(torch.from_numpy(val_x[i : i + 256])).numpy() for i in range(0, len(val_x), 256)])
    log(f"  fake-quant PyTorch model: top-1 {top1(fake, val_y):.2f}% (FP32 {top1(reference, val_y):.2f}%)")
    art = spec.qat_export(qmodel, quantizer, sample, target, out_dir, val_x, val_y, reference, max_drop)
    record = {
        "epochs": epochs,
        "steps": rows[-1]["steps"] if rows else 0,
        "lr": lr,
        "batch_size": batch_size,
        "teacher": "fp32 student" if teacher is None else "run teacher",
        "loss": f"(1-a) CE + a tau^2 KL, a={alpha:g}, tau=1",
        "history": rows,
        "fake_quant_top1": top1(fake, val_y),
        "float_layers": spec.float_layers(art),
    }
    art.manifest["quantization"] = {**(art.manifest.get("quantization") or {}), **record}
    return art, art.manifest["quantization"]
