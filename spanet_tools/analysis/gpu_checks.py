"""The checks behind ``tools/analysis/gpu_checks.py`` (and so ``gpu_checks.sh``): one short run
on a GPU.

* :func:`run_smoke`: mmcv's compiled ops (``nms``, ``sigmoid_focal_loss``) on a device against
  plain PyTorch, and the versions of the stack.
* :func:`check_correctness`: SPANet-S on a device against the same model on the CPU (float32,
  and under autocast), and against the paper-literal reference on the device with the same
  weights.
* :func:`make_coco_data`: the generated COCO-style dataset the training steps use, reused when
  it is already there.
* :func:`train_stats` (and :func:`format_train_stats`): time, data_time and memory of a
  training run, from MMEngine's scalars log.
* :func:`profile_step`: the kernels (on the CPU, the operators) that take the most time in a
  contender's forward or training step.
* :func:`note_line`: one line about a result file, for ``gpu_checks.sh``'s summary table.

The checks that run something (smoke, correctness, data) print their report lines as they go,
so that a run cut short by a time limit still shows how far it got; the ones that read results
(:func:`train_stats`, :func:`note_line`) return them and leave the printing to the caller.
torch and the OpenMMLab codebases are imported inside the functions that need them.
"""

import copy
import glob
import json
import os.path as osp
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

#: Input sizes (height, width) of :func:`check_correctness` by default: a square one and an odd,
#: non-square one (uneven padding and pooling at every stage).
CORRECTNESS_SIZES = ((224, 224), (333, 517))
#: Kinds of result file that :func:`note_line` summarises.
NOTE_KINDS = ('correctness', 'fwd', 'train', 'profile')
# Default largest relative error of autocast against float32, per autocast dtype.
AMP_TOLERANCE = {'float16': 1e-2, 'bfloat16': 5e-2}


class EmptyTrainingLog(ValueError):
    """A training log without a single training entry (no line with ``time`` and ``loss``)."""


def relative_error(a, b) -> float:
    """The error of ``a`` relative to ``b``, on the scale of ``b``.

    Args:
        a (Tensor): The values under test.
        b (Tensor): The expected values, of the same shape.

    Returns:
        float: ``max |a - b| / max |b|``, both taken to float32 on the CPU (``max |b|`` at least
        1e-12, so that an all-zero ``b`` gives a large error rather than a division by zero).
    """
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _set_exact_float32() -> None:
    """No TF32 in matrix products or convolutions: float32 on the GPU is IEEE float32."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# -- smoke ------------------------------------------------------------------------------------


def run_smoke(device: str) -> int:
    """Import the stack, print its versions and check mmcv's compiled ops on ``device``.

    ``mmcv.ops.nms`` must keep the same boxes as ``torchvision.ops.nms`` on the CPU, and
    ``mmcv.ops.sigmoid_focal_loss`` (what RetinaNet's ``FocalLoss`` runs on CUDA) must agree
    with MMDetection's PyTorch version in its losses and gradients (relative error < 1e-4).
    mmcv has no CPU kernel for the focal loss: on a device other than CUDA its absence is
    reported, not counted as a failure.

    Args:
        device (str): The torch device to check, e.g. ``'cuda'``, ``'cuda:1'`` or ``'cpu'``.

    Returns:
        int: The exit status: 0 if every check passed, 1 if any failed.
    """
    import torch

    t0 = time.perf_counter()
    import mmcv
    import mmcv.ops  # noqa: F401
    import mmdet
    import mmdet.models  # noqa: F401
    import mmengine
    import mmpretrain
    import mmpretrain.models  # noqa: F401
    import mmseg
    import mmseg.models  # noqa: F401
    import torchvision
    from mmcv.ops import get_compiler_version, get_compiling_cuda_version

    import spanet_mm

    print(f'imports: {time.perf_counter() - t0:.1f} s')
    print(
        f'python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}),'
        f' torchvision {torchvision.__version__}, mmengine {mmengine.__version__}, mmcv '
        f'{mmcv.__version__} (ops compiled with CUDA {get_compiling_cuda_version()}, '
        f'{get_compiler_version()}), mmdet {mmdet.__version__}, mmpretrain '
        f'{mmpretrain.__version__}, mmseg {mmseg.__version__}, spanet_mm '
        f'{spanet_mm.__version__}'
    )
    device = torch.device(device)
    if device.type == 'cuda':
        print(
            f'device: {torch.cuda.get_device_name(device)}, capability '
            f'{torch.cuda.get_device_capability(device)}'
        )
    gen = torch.Generator().manual_seed(0)
    failures = [
        name
        for name, agrees in (
            ('nms', _nms_agrees(device, gen)),
            ('sigmoid_focal_loss', _focal_loss_agrees(device, gen)),
        )
        if not agrees
    ]
    print('smoke: ' + ('FAILED ' + ', '.join(failures) if failures else 'OK'))
    return 1 if failures else 0


def _nms_agrees(device, gen) -> bool:
    """Whether ``mmcv.ops.nms`` on ``device`` keeps the boxes torchvision's keeps."""
    import torch
    import torchvision
    from mmcv.ops import nms

    xy = torch.rand(500, 2, generator=gen) * 500
    wh = torch.rand(500, 2, generator=gen) * 80 + 4
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(500, generator=gen)
    _, keep = nms(boxes.to(device), scores.to(device), 0.5)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    same = torch.equal(keep.cpu().sort().values, expected.sort().values)
    print(
        f'mmcv.ops.nms on {device}: kept {keep.numel()} of 500 boxes, '
        f'{"the same as" if same else "DIFFERENT FROM"} torchvision.ops.nms on the CPU'
    )
    return same


def _focal_loss_agrees(device, gen) -> bool:
    """Whether ``mmcv.ops.sigmoid_focal_loss`` (what RetinaNet's FocalLoss runs on CUDA,
    unreduced) on ``device`` agrees with mmdet's PyTorch version; mmcv has no CPU kernel for
    it, which counts as a failure on CUDA only."""
    import torch
    from mmcv.ops import sigmoid_focal_loss
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss

    logits = torch.randn(300, 80, generator=gen)
    labels = torch.randint(0, 81, (300,), generator=gen)  # 80 = background
    one_hot = torch.nn.functional.one_hot(labels, 81)[:, :80].float()
    ref_pred = logits.clone().requires_grad_()
    ref = py_sigmoid_focal_loss(ref_pred, one_hot, None, 2.0, 0.25, 'none')
    ref.sum().backward()
    try:
        pred = logits.to(device).requires_grad_()
        loss = sigmoid_focal_loss(pred, labels.to(device), 2.0, 0.25, None, 'none')
        loss.sum().backward()
    except (NotImplementedError, RuntimeError) as error:
        print(f'mmcv.ops.sigmoid_focal_loss on {device}: not available ({error})'[:300])
        return device.type != 'cuda'
    loss_err = relative_error(loss, ref)
    grad_err = relative_error(pred.grad, ref_pred.grad)
    print(
        f'mmcv.ops.sigmoid_focal_loss on {device}: sum {float(loss.sum()):.4f} vs '
        f'PyTorch {float(ref.sum()):.4f}; relative error of the losses {loss_err:.1e}, '
        f'of the gradients {grad_err:.1e}'
    )
    return loss_err < 1e-4 and grad_err < 1e-4


# -- correctness ------------------------------------------------------------------------------


def check_correctness(
    device: str,
    sizes: Sequence[Tuple[int, int]] = CORRECTNESS_SIZES,
    batch: int = 2,
    seed: int = 0,
    tol_float32: float = 1e-4,
    tol_amp: Optional[float] = None,
    json_path: Optional[str] = None,
) -> int:
    """Compare SPANet-S on ``device`` with the CPU and with the paper-literal reference.

    Three checks per size, each on every stage's output (error: :func:`relative_error`):
    SPANet-S (catalogue ``spanet:s``, random init) on ``device`` in float32 (TF32 off) and
    under autocast (float16 on CUDA, bfloat16 elsewhere) against the same weights on the CPU
    in float32; and ``spanet:s`` against ``reference:s`` with the same weights, both on
    ``device`` in float32. On CUDA, also its forward replayed from a CUDA graph
    (:class:`~spanet_mm.deployment.cuda_graph.CUDAGraphForward`) against the eager one, for
    two inputs and after new weights are loaded, and its refusal of another input shape. A
    NaN or an infinite autocast output fails its check. One line is printed per check, and a
    summary.

    Args:
        device (str): The torch device to check; ``'cpu'`` compares the CPU with itself (a dry
            run of the script, under bfloat16 autocast).
        sizes (Sequence[tuple[int, int]]): Input sizes, (height, width). Default
            :data:`CORRECTNESS_SIZES`.
        batch (int): Images per input. Default 2.
        seed (int): Seed of the weights and inputs. Default 0.
        tol_float32 (float): The largest relative error allowed in float32. Default 1e-4.
        tol_amp (float, optional): The same under autocast. Default :data:`AMP_TOLERANCE`
            of the autocast dtype: 1e-2 for float16, 5e-2 for bfloat16, which keeps 3 fewer
            significant bits (SPANet-S's stages under CPU autocast differ from float32 by
            0.7-1.5e-2).
        json_path (str, optional): Write the device, torch version, GPU name (None off CUDA),
            batch and every check (``check``, ``size``, per-stage ``errors``, ``max_error``,
            ``tolerance``, ``ok``) to this json file.

    Returns:
        int: The exit status: 0 if every check is within its tolerance, 1 otherwise.

    Raises:
        ValueError: If ``sizes`` is empty or ``batch`` is below 1.
    """
    # Without a size (or an image) there would be no check, and the run would pass.
    if not sizes or batch < 1:
        raise ValueError(
            f'check_correctness needs sizes and a batch >= 1, got sizes {sizes!r}, batch {batch}'
        )
    import torch

    from .benchmark import amp_dtype_of, dtype_name

    _set_exact_float32()
    torch.manual_seed(seed)
    device = torch.device(device)
    amp_dtype = amp_dtype_of(device)
    if tol_amp is None:
        tol_amp = AMP_TOLERANCE[dtype_name(amp_dtype)]
    checks: List[dict] = []
    t0 = time.perf_counter()
    _check_against_cpu(device, sizes, batch, amp_dtype, tol_float32, tol_amp, checks)
    _check_against_reference(device, sizes, batch, tol_float32, checks)
    if device.type == 'cuda':
        _check_cuda_graph(device, sizes, batch, tol_float32, checks)
    failed = [c for c in checks if not c['ok']]
    print(
        f'correctness: {len(checks) - len(failed)}/{len(checks)} checks within tolerance '
        f'({time.perf_counter() - t0:.1f} s)'
    )
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(
                dict(
                    device=str(device),
                    torch=torch.__version__,
                    gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
                    batch=batch,
                    checks=checks,
                ),
                f,
                indent=1,
            )
    return 1 if failed else 0


def _record(
    checks: List[dict], name: str, size: Tuple[int, int], errors: List[float], tol: float
) -> None:
    """Add one check (per-stage errors against a tolerance) to ``checks`` and print it."""
    ok = all(e < tol for e in errors) and all(e == e for e in errors)  # NaN fails
    checks.append(
        dict(
            check=name,
            size=f'{size[0]}x{size[1]}',
            errors=errors,
            max_error=max(errors),
            tolerance=tol,
            ok=ok,
        )
    )
    print(
        f'{name:<44} {size[0]:>4}x{size[1]:<4} stage errors '
        + ' '.join(f'{e:.1e}' for e in errors)
        + f'  (tol {tol:.0e}) {"ok" if ok else "FAILED"}',
        flush=True,
    )


def _check_against_cpu(
    device, sizes, batch: int, amp_dtype, tol_float32: float, tol_amp: float, checks: List[dict]
) -> None:
    """SPANet-S (catalogue, random init) on ``device`` in float32 and under autocast against
    the same weights on the CPU in float32."""
    import torch

    from spanet_tools.catalogue import build_backbone

    from .benchmark import dtype_name

    cpu_model = build_backbone('spanet:s').eval()
    dev_model = copy.deepcopy(cpu_model).to(device).eval()
    for size in sizes:
        x = torch.randn(batch, 3, *size)
        with torch.no_grad():
            expected = cpu_model(x)
            got = dev_model(x.to(device))
            with torch.autocast(device.type, dtype=amp_dtype):
                got_amp = dev_model(x.to(device))
        print(
            f'  outputs at {size[0]}x{size[1]}: '
            + ', '.join('x'.join(map(str, o.shape)) for o in expected)
            + f'; autocast dtypes: {sorted({str(o.dtype) for o in got_amp})}'
        )
        _record(
            checks,
            f'spanet:s {device.type} float32 vs cpu float32',
            size,
            [relative_error(a, b) for a, b in zip(got, expected)],
            tol_float32,
        )
        finite = all(bool(torch.isfinite(o).all()) for o in got_amp)
        errors = [relative_error(a, b) for a, b in zip(got_amp, expected)]
        _record(
            checks,
            f'spanet:s {device.type} {dtype_name(amp_dtype)} autocast vs cpu float32',
            size,
            errors if finite else [float('nan')] * len(errors),
            tol_amp,
        )


def _check_against_reference(device, sizes, batch: int, tol: float, checks: List[dict]) -> None:
    """SPANet-S against the paper-literal reference with the same weights, both on
    ``device`` in float32."""
    import torch

    from spanet_mm import SPANet
    from spanet_tools.catalogue import build_backbone

    reference = build_backbone('reference:s')
    model = SPANet('s')
    weights, _ = SPANet.from_release_layout(reference.state_dict())
    model.load_state_dict(weights)
    model, reference = model.to(device).eval(), reference.to(device).eval()
    for size in sizes:
        x = torch.randn(batch, 3, *size, device=device)
        with torch.no_grad():
            ours, theirs = model(x), reference(x)
        _record(
            checks,
            f'spanet:s vs reference:s, {device.type} float32',
            size,
            [relative_error(a, b) for a, b in zip(ours, theirs)],
            tol,
        )


def _check_cuda_graph(device, sizes, batch: int, tol: float, checks: List[dict]) -> None:
    """SPANet-S replayed from a CUDA graph against its eager forward (float32, ``device``):
    for two inputs, then after other weights are loaded in place; and a refused shape."""
    import torch

    from spanet_mm.deployment.cuda_graph import CUDAGraphForward
    from spanet_tools.catalogue import build_backbone

    model = build_backbone('spanet:s').to(device)
    model.eval()
    for size in sizes:
        x = torch.randn(batch, 3, *size, device=device)
        graphed = CUDAGraphForward(model, x)
        for label in ('first input', 'second input', 'new weights'):
            if label == 'new weights':
                model.load_state_dict(build_backbone('spanet:s').state_dict())
            x = torch.randn(batch, 3, *size, device=device)
            replayed = [out.clone() for out in graphed(x)]
            with torch.no_grad():
                eager = model(x)
            _record(
                checks,
                f'spanet:s cuda graph vs eager, {label}',
                size,
                [relative_error(a, b) for a, b in zip(replayed, eager)],
                tol,
            )
        try:
            graphed(torch.randn(batch, 3, size[0] + 32, size[1], device=device))
            refused = False
        except ValueError:
            refused = True
        # (an error of 0 passes, NaN fails)
        _record(
            checks,
            'spanet:s cuda graph refuses another shape',
            size,
            [0.0 if refused else float('nan')],
            tol,
        )


# -- data and training logs -------------------------------------------------------------------


def make_coco_data(
    root: str, num_train: int = 128, num_val: int = 4, size: int = 800, reuse: bool = False
) -> bool:
    """Write the generated COCO-style shapes dataset
    (:func:`spanet_mm.datasets.make_coco_shapes`, seed 0, its shapes named as the first three
    COCO categories, all 80 listed, as the RetinaNet configs' classes are) into ``root``, and
    print what was done.

    Args:
        root (str): The dataset's directory.
        num_train (int): Training images. Default 128.
        num_val (int): Validation images. Default 4.
        size (int): Side of the square images. Default 800.
        reuse (bool): Keep the data already in ``root`` if its training annotations list
            ``num_train`` images ``size`` pixels wide and COCO's categories (a warm machine
            keeps its ``/tmp``).

    Returns:
        bool: True if the data was generated, False if what was there was reused.
    """
    ann = osp.join(root, 'annotations', 'instances_train2017.json')
    if reuse and osp.exists(ann):
        with open(ann) as f:
            data = json.load(f)
        images = data['images']
        coco_named = len(data.get('categories', [])) == 80
        if len(images) == num_train and images and images[0]['width'] == size and coco_named:
            print(f'reusing {num_train} images of {size}x{size} in {root}')
            return False
    from spanet_mm.datasets.synthetic import make_coco_shapes

    t0 = time.perf_counter()
    out = make_coco_shapes(
        root, num_train=num_train, num_val=num_val, image_size=size, seed=0, categories='coco'
    )
    print(
        f'generated {num_train}+{num_val} images of {size}x{size} in '
        f'{out["data_root"]} ({time.perf_counter() - t0:.1f} s)'
    )
    return True


def training_log_entries(work_dir: str) -> List[dict]:
    """The training entries of the newest MMEngine scalars log under ``work_dir``.

    Args:
        work_dir (str): A Runner's work dir; its runs log to ``TIMESTAMP/vis_data/``.

    Returns:
        list[dict]: The entries (one per logged iteration) that have ``time`` and ``loss``, in
        the order logged, from the most recently modified ``*/vis_data/scalars.json`` (else
        ``*/vis_data/*.json``, the LoggerHook's own log).

    Raises:
        FileNotFoundError: If there is no such log (or no ``work_dir``).
    """
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')), key=osp.getmtime)
    if not found:  # the LoggerHook's own json log, named after the run's timestamp
        found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', '*.json')), key=osp.getmtime)
    if not found:
        raise FileNotFoundError(f'no vis_data/*.json under {work_dir}')
    with open(found[-1]) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    return [e for e in entries if 'time' in e and 'loss' in e]


def _step(entry: dict) -> int:
    return entry.get('step', entry.get('iter', 0))


def train_stats(
    work_dir: str,
    label: str = 'train',
    skip: int = 20,
    batch: Optional[int] = 2,
    json_path: Optional[str] = None,
) -> Dict:
    """Time, data_time, memory and loss of the training run logged in ``work_dir``.

    Each logged entry is MMEngine's mean over the logging interval before it; the entries at
    steps up to ``skip`` (the warm-up) are left out of the means, unless that leaves none,
    then the last entry alone is used.

    Args:
        work_dir (str): The run's work dir (see :func:`training_log_entries`).
        label (str): The run's name in the stats and in ``json_path``. Default ``'train'``.
        skip (int): Leave out the entries logged at steps up to this one. Default 20.
        batch (int, optional): Images per iteration, for ``images_per_s``; 0 or None leaves
            that None. Default 2.
        json_path (str, optional): Add the stats under ``label`` to this json file (created if
            missing; the other labels in it are kept).

    Returns:
        dict: ``label``, ``iterations`` (the last logged step), ``logged_steps`` (those
        averaged), ``skip``, ``time_s`` and ``data_time_s`` (means, seconds per iteration),
        ``images_per_s``, ``memory_mb`` (the peak of the logged ``memory``, None if not
        logged), ``memory_mb_per_interval``, ``loss_first``, ``loss_last`` and ``entries``
        (all training entries).

    Raises:
        FileNotFoundError: If ``work_dir`` holds no scalars log.
        EmptyTrainingLog: If the log holds no training entry.
    """
    entries = training_log_entries(work_dir)
    if not entries:
        raise EmptyTrainingLog(f'no training entries (with time and loss) logged in {work_dir}')
    kept = [e for e in entries if _step(e) > skip] or entries[-1:]
    times = [e['time'] for e in kept]
    data_times = [e['data_time'] for e in kept]
    memory = [e['memory'] for e in kept if 'memory' in e]
    stats = dict(
        label=label,
        iterations=_step(entries[-1]),
        logged_steps=[_step(e) for e in kept],
        skip=skip,
        time_s=statistics.mean(times),
        data_time_s=statistics.mean(data_times),
        images_per_s=batch / statistics.mean(times) if batch else None,
        memory_mb=max(memory) if memory else None,
        memory_mb_per_interval=memory,
        loss_first=entries[0]['loss'],
        loss_last=entries[-1]['loss'],
        entries=entries,
    )
    if json_path:
        previous = {}
        if osp.exists(json_path):
            with open(json_path) as f:
                previous = json.load(f)
        previous[label] = stats
        with open(json_path, 'w') as f:
            json.dump(previous, f, indent=1)
    return stats


def format_train_stats(stats: Dict) -> str:
    """One line about :func:`train_stats`'s result.

    Args:
        stats (dict): What :func:`train_stats` returned.

    Returns:
        str: ``train-stats LABEL: iterations N, over steps [...] ...: time ... s/iter, ...``.
    """
    images_per_s = stats['images_per_s']
    return (
        f'train-stats {stats["label"]}: iterations {stats["iterations"]}, over steps '
        f'{stats["logged_steps"]} (each the mean of the interval before): time '
        f'{stats["time_s"]:.3f} s/iter, data_time {stats["data_time_s"]:.3f} s/iter, '
        + (f'{images_per_s:.1f} img/s, ' if images_per_s is not None else '')
        + f'peak memory {stats["memory_mb"]} MB (per interval '
        f'{stats["memory_mb_per_interval"]}), loss '
        f'{stats["loss_first"]:.3f} -> {stats["loss_last"]:.3f}'
    )


# -- profile ----------------------------------------------------------------------------------


def profile_step(
    name: str,
    device: str,
    size: Tuple[int, int],
    batch: int = 2,
    mode: str = 'forward',
    amp: bool = False,
    rounds: int = 5,
    top: int = 15,
    json_path: Optional[str] = None,
) -> List[dict]:
    """Where a contender's time goes: the kernels of ``rounds`` calls, by time.

    On CUDA the rows are the GPU kernels (their own device time); elsewhere they are the
    operators' own CPU time. A table of the ``top`` rows is printed, with each row's calls and
    milliseconds per call of the model and its share of the summed time.

    Args:
        name (str): A catalogued contender (``FAMILY:ARCH``, see
            :func:`spanet_tools.catalogue.build_backbone`), built with random weights.
        device (str): The torch device, e.g. ``'cuda'`` or ``'cpu'``.
        size (tuple[int, int]): Input (height, width).
        batch (int): Images per input. Default 2.
        mode (str): ``'forward'`` (no autograd) or ``'train'`` (forward, backward, SGD step),
            as in ``tools/analysis/benchmark.py``. Default ``'forward'``.
        amp (bool): Under autocast (float16 on CUDA, bfloat16 elsewhere). Default False.
        rounds (int): Profiled calls, after 3 untimed ones. Default 5.
        top (int): Rows printed and returned. Default 15.
        json_path (str, optional): Write the settings, the summed time and the rows here.

    Returns:
        list[dict]: The ``top`` rows, slowest first: ``name``, ``calls`` and ``ms`` (per call
        of the model) and ``share`` (of the summed time).

    Raises:
        ValueError: If ``batch``, ``rounds`` or ``top`` is below 1.
    """
    if min(batch, rounds, top) < 1:
        raise ValueError(
            f'profile_step needs batch, rounds and top >= 1, got {batch}, {rounds}, {top}'
        )
    import torch
    from torch.profiler import ProfilerActivity, profile

    from .benchmark import amp_dtype_of, build_contender, dtype_name, make_step

    device = torch.device(device)
    on_cuda = device.type == 'cuda'
    amp_dtype = amp_dtype_of(device) if amp else None
    model = build_contender(name).to(device)
    x = torch.randn(batch, 3, *size, device=device)
    step = make_step(model, mode, x, amp_dtype)
    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(rounds):
            step()
    rows = _profile_rows(prof.key_averages(), on_cuda, rounds)
    total_ms = sum(r['ms'] for r in rows)
    for r in rows:
        r['share'] = r['ms'] / total_ms if total_ms else 0.0
    what = 'GPU kernel' if on_cuda else 'CPU operator'
    dtype = dtype_name(amp_dtype or torch.float32)
    print(
        f'{name} {mode} {size[0]}x{size[1]} batch {batch} {dtype} on {device}: '
        f'{total_ms:.2f} ms of {what} time per call ({rounds} calls profiled)'
    )
    print(f'{"share":>6} {"ms":>8} {"calls":>6}  {what}')
    for r in rows[:top]:
        print(f'{r["share"]:6.1%} {r["ms"]:8.3f} {r["calls"]:6g}  {r["name"][:100]}')
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(
                dict(
                    model=name,
                    device=str(device),
                    size=list(size),
                    batch=batch,
                    mode=mode,
                    dtype=dtype,
                    torch=torch.__version__,
                    unit=what,
                    total_ms=total_ms,
                    rows=rows[:top],
                ),
                f,
                indent=1,
            )
    return rows[:top]


def _profile_rows(events, on_cuda: bool, rounds: int) -> List[dict]:
    """Self time per call of the model, of the kernels on CUDA or the CPU operators."""
    rows = []
    for e in events:
        if on_cuda:
            # The kernels themselves: operators own no device time beyond what they launch.
            if getattr(e, 'device_type', None) is None or e.device_type.name != 'CUDA':
                continue
            us = getattr(e, 'self_device_time_total', None)
            if us is None:
                us = e.self_cuda_time_total
        else:
            us = e.self_cpu_time_total
        if us > 0:
            rows.append(dict(name=e.key, calls=e.count / rounds, ms=us / 1e3 / rounds))
    return sorted(rows, key=lambda r: r['ms'], reverse=True)


# -- one-line notes for the summary table -------------------------------------------------------


def note_line(kind: str, path: str, label: Optional[str] = None) -> str:
    """One short line about a step's result file, for ``gpu_checks.sh``'s summary table.

    Args:
        kind (str): One of :data:`NOTE_KINDS`: ``'correctness'`` (a json of
            :func:`check_correctness`: the largest error of each kind of check, and how many
            were over their tolerance), ``'fwd'`` (a json of ``tools/analysis/benchmark.py``:
            each model's median time, its speed against ``reference:s`` and its peak
            memory), ``'train'`` (a json of :func:`train_stats`: time, data_time, memory, loss) or
            ``'profile'`` (a json of :func:`profile_step`: the summed time and the top row).
        path (str): The json file.
        label (str, optional): For ``'train'``: the run's label in the file.

    Returns:
        str: The line.

    Raises:
        ValueError: If ``kind`` is not one of :data:`NOTE_KINDS`.
    """
    if kind not in NOTE_KINDS:
        raise ValueError(f'unknown kind {kind!r}')
    with open(path) as f:
        data = json.load(f)
    if kind == 'correctness':
        worst = {}
        for check in data['checks']:
            check_kind = (
                'ref'
                if 'reference' in check['check']
                else 'amp'
                if 'autocast' in check['check']
                else 'fp32'
            )
            worst[check_kind] = max(worst.get(check_kind, 0.0), check['max_error'])
        bad = sum(not c['ok'] for c in data['checks'])
        return ', '.join(f'{k} {v:.1e}' for k, v in worst.items()) + f' max rel err; {bad} over tol'
    if kind == 'fwd':
        parts = []
        by_name = {r['model']: r for r in data['results']}
        for r in data['results']:
            text = f'{r["model"]} {r["median_ms"]:.1f}ms'
            if r['model'].startswith('spanet:') and 'reference:s' in by_name:
                text += f' ({by_name["reference:s"]["median_ms"] / r["median_ms"]:.2f}x ref)'
            if r.get('peak_mb') is not None:
                text += f' {r["peak_mb"]:.0f}MB'
            parts.append(text)
        return f'{data["dtype"]}: ' + ', '.join(parts)
    if kind == 'profile':
        first = data['rows'][0] if data['rows'] else None
        return f'{data["total_ms"]:.1f} ms of {data["unit"]} time per call' + (
            f'; top {first["share"]:.0%} {first["name"][:48]}' if first else ''
        )
    stats = data[label]
    return (
        f'{stats["time_s"]:.3f} s/it, data {stats["data_time_s"]:.3f} s/it, '
        f'{stats["memory_mb"]} MB, loss {stats["loss_first"]:.2f}->'
        f'{stats["loss_last"]:.2f}'
    )
