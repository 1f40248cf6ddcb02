#!/usr/bin/env bash
# Checks for one short run on a lent GPU machine (no network there): one call, or two.
#
#   bash tools/analysis/gpu_checks.sh all       # both below in one call, the build overlapped
#   bash tools/analysis/gpu_checks.sh build     # wheels -> /tmp/site, mmcv with CUDA ops, smoke
#   bash tools/analysis/gpu_checks.sh measure   # correctness, speed, profiles, training steps
#   bash tools/analysis/gpu_checks.sh table     # the comparison table, in at most GC_BUDGET_S
#
# `table` times, in float16 autocast, one process per setting and interleaved (with the GPU's
# name and GEMM calibration): the forwards of SPANet-S, SPANetV2-S18 pure and hybrid and
# ConvNeXt-T at 224, batch 128, eager (step fwd) and eager and compiled (compiled); their
# training steps at 224, batch 64, and 800x1216, batch 2 (train); RetinaNet 1x training
# iterations with --amp, batch 2, SPANet-S and ResNet-50 (retina), and the same with
# compile=True (retina_compile). It ends by printing the table
# (spanet_tools/analysis/gpu_table.py) and writing it to table.md in $OUT. Every step's time
# limit is cut to what is left of the budget (GC_BUDGET_S, 570 s): a step that does not fit is
# skipped and its cells read "-". It needs the build phase's /tmp (it installs and builds
# first, outside the budget, if that is gone). Knobs: GC_TABLE_STEPS
# (fwd,train,retina,compiled,retina_compile), GC_TABLE_FWD ("224:128", SIZE:BATCH),
# GC_TABLE_TRAIN ("224:64 800x1216:2"), GC_TABLE_ROUNDS (20, the forwards'),
# GC_TABLE_TRAIN_ROUNDS (10), GC_TABLE_WARMUP (5). A dry run here, without a GPU:
# GC_DEVICE=cpu GC_AMP=0 GC_CALIBRATION=128 GC_TABLE_FWD=32:1 GC_TABLE_TRAIN=32:1
# GC_TABLE_STEPS=fwd,train GC_TABLE_ROUNDS=1 GC_TABLE_TRAIN_ROUNDS=1 GC_TABLE_WARMUP=0 ...
#
# `all` saves most of the build's 4-5 minutes of a lease: mmcv compiles in the background (niced,
# two cores left free) while the steps that need no compiled op run on the GPU, with mmcv's
# Python part taken from its source tree; the RetinaNet runs wait for the build. The forward
# figures of `all` are therefore taken beside a compiler: compare them within one run
# (ratios), or take absolute times from `measure`.
#
# The machine gets the working tree and the ignored folder .whl (the wheels of the OpenMMLab
# stack and its missing dependencies, and mmcv's sdist). Everything built goes under /tmp, which
# the second call finds if it runs on the same (still warm) machine; `measure` installs and
# builds again if it does not. Logs are tee'd into ${OUT:-work_dirs/gpu_checks}; a summary
# table is printed last and written to summary.txt there.
#
# Making .whl (on a machine with network; Python 3.12 wheels, pins from
# requirements/constraints.txt; 11 MiB):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0 setuptools==80.9.0 \
#     addict==2.4.0 yapf==0.43.0 platformdirs==4.14.8 termcolor==3.3.0 terminaltables==3.1.10 \
#     pycocotools==2.0.11 shapely==2.2.0 model-index==0.1.11 ordered-set==4.1.0 ftfy==6.3.1 \
#     wcwidth==0.7.0 prettytable==3.18.0 importlib_metadata==10.2.0 lazy-importer==0.1.0 \
#     mat4py==0.6.0
#   pip download --no-deps --no-binary=:all: -d .whl mmcv==2.1.0
#
# A prebuilt mmcv wheel in .whl (mmcv-2.1.0-cp312-cp312-linux_x86_64.whl, with CUDA ops for the
# GPU machine's torch) is installed with the others, and no build runs. It can be made on a
# machine without a GPU that has nvcc of the same CUDA (13.0 here) and Python 3.12, in a venv
# holding the GPU machine's torch (2.11.0, whose nvidia-* wheels give the cuBLAS/cuSPARSE
# headers the toolkit may lack; symlink the missing ones into a folder on CPATH):
#   tar -xzf .whl/mmcv-2.1.0.tar.gz && cd mmcv-2.1.0 && CUDA_HOME=/usr/local/cuda \
#     CPATH=EXTRA_INCLUDE MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 \
#     CFLAGS="-O2 -g0 -DNDEBUG" VENV/bin/python setup.py bdist_wheel
# (-g0: without debug information the wheel is small enough to travel; about 25 minutes on
# two cores.)
#
# Each step of `measure` is guarded: a failure prints FAILED and the next step runs; the exit
# status is 1 if any step failed.
#
# mmcv 2.1.0 builds unpatched with CUDA 13.0 for sm_90 (13 of its 136 units compiled with
# nvcc 13.0.88 and torch 2.13's headers: only deprecation warnings, double4/longlong4 and
# cudaFuncSetSharedMemConfig in filtered_lrelu.cu). Measured there, one unit at a time:
# ~17 s a plain .cu, 34 s upfirdn2d_kernel.cu, 79 s filtered_lrelu.cu, ~8 s a .cpp; about
# 1,800 CPU-seconds in all, so 2.5-4 minutes with 16 jobs. A toolkit without the cuBLAS/
# cuSPARSE headers gets them from the nvidia-* wheels beside torch (cuda_env).
#
# Knobs (environment): GC_DEVICE (cuda), GC_STEPS (measure steps, comma-separated, default
# correctness,fwd_amp,fwd_fp32,bb_train_amp,profile,profile_train,train,train_r50; also
# fwd_graph: the float16 forwards eager and replayed from CUDA graphs),
# GC_BUDGET_S (360; 520 for `all`: optional steps start only if they fit), GC_AMP (1),
# GC_TRAIN_IMAGES (128), GC_IMAGE_SIZE (800), GC_TRAIN_SCALE ("(1333,800)"), GC_REBUILD (0),
# GC_WHEELS (.whl), GC_SITE (/tmp/site), GC_SCRATCH (/tmp/gpu_checks), GC_CALIBRATION (8192),
# GC_CORRECTNESS_ARGS (extra arguments of gpu_checks.py correctness), GC_FWD_CASES
# ("224:32 800x1216:2", SIZE:BATCH), GC_FWD_ROUNDS (30 with --amp, 20 without),
# GC_PROFILE_CASE ("800x1216:2", SIZE:BATCH of the backbone training step and the profiles).
# A dry run here, without a GPU: GC_DEVICE=cpu GC_AMP=0 GC_STEPS=correctness,train ...
set -euo pipefail

PHASE=${1:-}
case "$PHASE" in
  all|build|measure|table) ;;
  *) echo "usage: bash $0 {all|build|measure|table}" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
OUT=${OUT:-work_dirs/gpu_checks}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SITE=${GC_SITE:-/tmp/site}
SCRATCH=${GC_SCRATCH:-/tmp/gpu_checks}
mkdir -p "$SCRATCH"
WHL=${GC_WHEELS:-$REPO/.whl}
MMCV_VERSION=2.1.0
MMCV_SRC=$SCRATCH/mmcv-$MMCV_VERSION
DEVICE=${GC_DEVICE:-cuda}
case "$PHASE" in
  all) BUDGET_S=${GC_BUDGET_S:-520} ;;
  table) BUDGET_S=${GC_BUDGET_S:-570} ;;
  *) BUDGET_S=${GC_BUDGET_S:-360} ;;
esac
STEPS=${GC_STEPS:-correctness,fwd_amp,fwd_fp32,bb_train_amp,profile,profile_train,train,train_r50}
DATA=$SCRATCH/coco_shapes
TRAIN_IMAGES=${GC_TRAIN_IMAGES:-128}
IMAGE_SIZE=${GC_IMAGE_SIZE:-800}
TRAIN_SCALE=${GC_TRAIN_SCALE:-(1333,800)}
FWD_CASES=${GC_FWD_CASES:-224:32 800x1216:2}  # SIZE:BATCH of the forward benchmarks
PROFILE_CASE=${GC_PROFILE_CASE:-800x1216:2}  # SIZE:BATCH of the training step and the profiles
# The benchmark's calibration GEMM side: its default 2048 takes ~20 us on an H100 (timer noise).
CALIBRATION=${GC_CALIBRATION:-8192}
SUMMARY=$SCRATCH/summary.$PHASE.tsv
START=$(date +%s)
RC=0

export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# The python3 of a virtual environment keeps its tools (ninja) beside it.
PYBIN=$(dirname "$(python3 -c 'import sys; print(sys.executable)')")
export PATH=$PYBIN:$PATH

ts() { printf '[+%4ss %s]' "$(( $(date +%s) - START ))" "$(date +%H:%M:%S)"; }
say() { echo "$(ts) $*"; }
elapsed() { echo $(( $(date +%s) - START )); }

record() {  # NAME STATUS SECONDS NOTE
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$SUMMARY"
}

# step NAME TIMEOUT_S NOTE_KIND NOTE_FILE CMD...: run CMD under a time limit, record the result
# (and a one-line note read from NOTE_FILE by gpu_checks.py note), never stop the script.
step() {
  local name=$1 limit=$2 kind=$3 file=$4; shift 4
  local t0 status rc note=''
  t0=$(date +%s)
  echo
  say "=== $name (limit ${limit}s): $*"
  if timeout --kill-after=15 "$limit" "$@"; then
    status=OK
  else
    rc=$?
    status="FAILED (exit $rc)"
    [ "$rc" = 124 ] && status="FAILED (timeout ${limit}s)"
    RC=1
    say "$name FAILED"
  fi
  if [ "$kind" != - ]; then
    note=$(python3 tools/analysis/gpu_checks.py note "$kind" "$file" 2>/dev/null || true)
  fi
  say "=== $name: $status in $(( $(date +%s) - t0 ))s ${note:+($note)}"
  record "$name" "$status" "$(( $(date +%s) - t0 ))" "$note"
}

skip() {  # NAME REASON
  echo
  say "=== $1 SKIPPED: $2"
  record "$1" SKIPPED 0 "$2"
}

wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

fits() {  # ESTIMATE_S: whether an optional step still fits in the budget
  [ $(( $(elapsed) + $1 )) -le "$BUDGET_S" ]
}

print_summary() {
  {
    echo
    echo "SUMMARY of gpu_checks.sh $PHASE ($(date '+%F %T'), $(elapsed)s in all, device $DEVICE)"
    printf '%-22s %-22s %6s  %s\n' step status sec result
    printf '%-22s %-22s %6s  %s\n' ---- ------ --- ------
    while IFS=$'\t' read -r name status secs note; do
      printf '%-22s %-22s %6s  %s\n' "$name" "$status" "$secs" "$note"
    done < "$SUMMARY"
    if [ "$RC" = 0 ]; then echo "ALL OK"; else echo "SOME STEPS FAILED (exit status 1)"; fi
  } | tee "$OUT/summary.txt"
}

# -- environment ----------------------------------------------------------------------------

report_machine() {
  say "machine: $(nproc) CPUs, $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')," \
    "repo $REPO, OUT $OUT"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi -L || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm \
      --format=csv || true
  else
    say "no nvidia-smi"
  fi
  python3 -c '
import sys, torch
print("python", sys.version.split()[0], sys.executable, "| torch", torch.__version__, "CUDA",
      torch.version.cuda, "| cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' || true
}

cuda_env() {
  # CUDA_HOME for torch's cpp_extension: the toolkit holding nvcc (its lib64 has libcudart).
  if [ -z "${CUDA_HOME:-}" ]; then
    local d
    for d in /usr/local/cuda /usr/local/cuda-13.0; do
      if [ -x "$d/bin/nvcc" ]; then CUDA_HOME=$d; break; fi
    done
    if [ -z "${CUDA_HOME:-}" ] && command -v nvcc > /dev/null; then
      CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    fi
  fi
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  export PATH=$CUDA_HOME/bin:$PATH
  say "CUDA_HOME=$CUDA_HOME; $(nvcc --version | tail -1); $(${CXX:-c++} --version | head -1)"
  # A toolkit with only the compiler and runtime lacks the cuBLAS/cuSPARSE/cuSOLVER headers
  # that ATen's CUDA headers include: take them from the nvidia-* wheels beside torch
  # (symlinks to the headers the toolkit lacks only, so that its own runtime headers win).
  local inc=$SCRATCH/cuda_extra_include lib=$SCRATCH/cuda_extra_lib
  if [ ! -e "$CUDA_HOME/include/cusparse.h" ]; then
    mkdir -p "$inc"
    local dirs
    dirs=$(python3 -c '
import glob, os, sysconfig
bases = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
print("\n".join(sorted({d for b in bases for d in glob.glob(os.path.join(b, "nvidia", "*", "include"))})))')
    local d f
    for d in $dirs; do
      for f in "$d"/cublas*.h "$d"/cusparse*.h "$d"/cusolver*.h "$d"/curand*.h \
               "$d"/cufft*.h "$d"/cudalibxt.h "$d"/nvrtc.h "$d"/nvJitLink.h; do
        [ -e "$f" ] || continue
        [ -e "$CUDA_HOME/include/$(basename "$f")" ] || [ -e "$inc/$(basename "$f")" ] \
          || ln -s "$f" "$inc/$(basename "$f")"
      done
    done
    export CPATH=$inc${CPATH:+:$CPATH}
    say "the toolkit has no cusparse.h: CPATH=$inc ($(ls "$inc" | wc -l) headers from:" \
      "$(echo $dirs))"
    [ -e "$inc/cusparse.h" ] || say "WARNING: no cusparse.h found in the nvidia wheels either"
  fi
  if ! ls "$CUDA_HOME"/lib64/libcudart.so > /dev/null 2>&1; then
    local rt
    rt=$(python3 -c '
import glob, os, sysconfig
b = sysconfig.get_paths()["purelib"]
c = sorted(glob.glob(os.path.join(b, "nvidia", "*", "lib", "libcudart.so*")))
print(c[0] if c else "")')
    if [ -n "$rt" ]; then
      mkdir -p "$lib"
      ln -sf "$rt" "$lib/libcudart.so"
      export LIBRARY_PATH=$lib${LIBRARY_PATH:+:$LIBRARY_PATH}
      say "no $CUDA_HOME/lib64/libcudart.so: linking against $rt"
    fi
  fi
}

install_wheels() {
  local t0=$(date +%s)
  # Only wheels here: mmcv's sdist is built by build_mmcv (unless a prebuilt mmcv wheel is
  # among them: then build_mmcv finds its compiled ops and builds nothing).
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHL"/*.whl 2>&1 | grep -v "Running pip as the 'root' user" || true
  # mmpretrain 1.2.0 imports its BLIP models when its dependency check sees transformers
  # >= 4.28 installed, and they fail at import with transformers 5 (seen on the H100 image:
  # "NoneType takes no arguments"). Metadata of an older version first on the path makes the
  # check register placeholders instead; nothing here uses those models.
  if python3 -c 'import importlib.metadata as m, sys; sys.exit(int(m.version("transformers").split(".")[0]) < 5)' 2>/dev/null; then
    mkdir -p "$SITE/transformers-4.0.0.dist-info"
    printf 'Metadata-Version: 2.1\nName: transformers\nVersion: 4.0.0\n' \
      > "$SITE/transformers-4.0.0.dist-info/METADATA"
  fi
  # (mmdet, mmpretrain and mmseg import mmcv: only found here, imported after its build)
  python3 -c '
import importlib.util, mmengine, pkg_resources, setuptools
missing = [m for m in ("mmdet", "mmpretrain", "mmseg") if importlib.util.find_spec(m) is None]
assert not missing, missing
print("mmengine", mmengine.__version__, "setuptools", setuptools.__version__)' \
    && say "wheels installed into $SITE in $(( $(date +%s) - t0 ))s"
}

mmcv_ready() {  # mmcv's ops import (and were compiled with CUDA, unless GC_DEVICE=cpu)
  GC_DEVICE=$DEVICE python3 -c '
import os
from mmcv.ops import get_compiling_cuda_version
assert os.environ["GC_DEVICE"] == "cpu" or get_compiling_cuda_version() != "not available"
' > /dev/null 2>&1
}

build_mmcv() {  # LOGFILE
  local log=$1 t0
  if [ "${GC_REBUILD:-0}" != 1 ] && ls "$SITE"/mmcv/_ext*.so > /dev/null 2>&1 && mmcv_ready; then
    say "mmcv with CUDA ops already in $SITE (GC_REBUILD=1 to build again)"
    return 0
  fi
  cuda_env
  # The GPU's compute capability (9.0 on an H100 or H200): one target, sm_90.
  MMCV_ARCH=${TORCH_CUDA_ARCH_LIST:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader \
    2>/dev/null | head -1 | tr -d ' ' || true)}
  MMCV_ARCH=${MMCV_ARCH:-9.0}
  if [ ! -f "$MMCV_SRC/setup.py" ]; then
    tar -xzf "$WHL/mmcv-$MMCV_VERSION.tar.gz" -C "$SCRATCH"
  fi
  python3 -c 'from torch.utils.cpp_extension import is_ninja_available as n; assert n()' \
    || { say "no torch, or no ninja on PATH (torch would compile 136 units one by one)"
         return 1; }
  say "building mmcv $MMCV_VERSION with CUDA ops for sm_${MMCV_ARCH/./}," \
    "${MMCV_JOBS:-$(nproc)} jobs (log $log)"
  t0=$(date +%s)
  if ! (cd "$MMCV_SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$MMCV_ARCH \
          MAX_JOBS=${MMCV_JOBS:-$(nproc)} ${MMCV_NICE:+nice -n "$MMCV_NICE"} \
          python3 setup.py build_ext --inplace > "$log" 2>&1); then
    say "mmcv build FAILED after $(( $(date +%s) - t0 ))s; first errors and the end of $log:"
    grep -n -m 20 -A 3 -E 'error|Error' "$log" | head -80 || true
    tail -30 "$log"
    return 1
  fi
  MMCV_BUILD_S=$(( $(date +%s) - t0 ))
  say "mmcv built in ${MMCV_BUILD_S}s (wall); $(grep -c -E '^\[[0-9]+/[0-9]+\]' "$log") ninja steps"
  # What each unit took (ninja's log: start and end in ms), for the next estimate.
  local nlog
  nlog=$(ls "$MMCV_SRC"/build/temp.*/.ninja_log 2>/dev/null | head -1 || true)
  if [ -n "$nlog" ]; then
    awk '!/^#/ {n++; t += ($2 - $1) / 1000} END {printf "%d units, %.0f s of compile in all\n", n, t}' \
      "$nlog"
    echo "slowest units (s):"
    awk '!/^#/ {k = split($4, p, "/"); printf "%7.1f %s\n", ($2 - $1) / 1000, p[k]}' "$nlog" \
      | sort -rn | head -6
  fi
  # Install the built package (its _ext in place) with metadata, as pip would.
  # (copied aside and moved in, so that a step importing mmcv meanwhile never sees half of it)
  rm -rf "$SITE/mmcv" "$SITE"/mmcv-*.dist-info "$SITE/.mmcv.partial"
  cp -a "$MMCV_SRC/mmcv" "$SITE/.mmcv.partial"
  mv "$SITE/.mmcv.partial" "$SITE/mmcv"
  mkdir -p "$SITE/mmcv-$MMCV_VERSION.dist-info"
  printf 'Metadata-Version: 2.1\nName: mmcv\nVersion: %s\n' "$MMCV_VERSION" \
    > "$SITE/mmcv-$MMCV_VERSION.dist-info/METADATA"
  echo gpu_checks > "$SITE/mmcv-$MMCV_VERSION.dist-info/INSTALLER"
  : > "$SITE/mmcv-$MMCV_VERSION.dist-info/RECORD"
  ls -la "$SITE"/mmcv/_ext*.so
}

make_data() {  # a step: the generated COCO-style data (reused if already there)
  step data 120 - - python3 tools/analysis/gpu_checks.py make-coco "$DATA" --reuse \
    --num-train "$TRAIN_IMAGES" --num-val 4 --size "$IMAGE_SIZE"
}

# -- phases ---------------------------------------------------------------------------------

wheels_step() {  # install_wheels, recorded in the summary; status 1 (and RC=1) if it failed
  local t0=$(date +%s)
  if install_wheels; then
    record wheels OK $(( $(date +%s) - t0 )) "$(ls "$WHL"/*.whl | wc -l) wheels -> $SITE"
  else
    record wheels FAILED $(( $(date +%s) - t0 )) ''
    RC=1
    return 1
  fi
}

build_step() {  # LOG: build_mmcv in the foreground, recorded; status 1 (and RC=1) if it failed
  local t0=$(date +%s)
  MMCV_BUILD_S=''
  if build_mmcv "$1"; then
    record mmcv_build OK $(( $(date +%s) - t0 )) \
      "${MMCV_BUILD_S:+compile ${MMCV_BUILD_S}s wall, }TORCH_CUDA_ARCH_LIST=${MMCV_ARCH:-}"
  else
    record mmcv_build FAILED $(( $(date +%s) - t0 )) "see $(basename "$1")"
    RC=1
    return 1
  fi
}

phase_build() {
  report_machine
  wheels_step || return 0
  build_step "$OUT/mmcv_build.log" || return 0
  step imports 120 - - python3 -c "import mmcv.ops, mmdet.models, mmpretrain.models, \
mmseg.models, spanet_mm; from mmcv.ops import nms, sigmoid_focal_loss; print('imports OK')"
  step smoke 120 - - python3 tools/analysis/gpu_checks.py smoke --device "$DEVICE"
  # The generated data for `measure` (kept under /tmp if the machine stays).
  make_data
}

train_options() {
  TRAIN_OPTS=(
    "train_dataloader.dataset.data_root=$DATA/"
    "train_dataloader.batch_size=2"
    "train_dataloader.dataset.pipeline.2.keep_ratio=False"
    "train_dataloader.dataset.pipeline.2.scale=$TRAIN_SCALE"
    "train_cfg.max_epochs=1"
    "default_hooks.logger.interval=10"
    "log_processor.window_size=10"
    "default_hooks.checkpoint.interval=100"
    "default_hooks.checkpoint.save_last=False"
    "model.backbone.init_cfg=None"
  )
}

train_run() {  # LABEL CONFIG LIMIT [CFG_OPTION...]
  local label=$1 config=$2 limit=$3 wd=$SCRATCH/work_dirs/$1
  shift 3
  local amp=()
  [ "${GC_AMP:-1}" = 1 ] && amp=(--amp)
  rm -rf "$wd"
  train_options
  step "$label" "$limit" - - python3 tools/train.py "$config" "${amp[@]}" --no-validate \
    --work-dir "$wd" --cfg-options "${TRAIN_OPTS[@]}" "$@"
  step "${label}_stats" 60 train "${TRAIN_JSON:-$OUT/train.json}:$label" \
    python3 tools/analysis/gpu_checks.py train-stats "$wd" --label "$label" --skip 20 \
    --batch 2 --json "${TRAIN_JSON:-$OUT/train.json}"
}

COMPARED="spanet:s convnext:tiny reference:s"
# The same two models replayed from CUDA graphs: their forwards without the kernel launches.
GRAPHED="spanet:s convnext:tiny spanet:s@cuda-graph convnext:tiny@cuda-graph"

benchmark() {  # NAME SIZE BATCH ROUNDS LIMIT "MODELS" [--amp ...]
  local name=$1 size=$2 batch=$3 rounds=$4 limit=$5 models=$6; shift 6
  # shellcheck disable=SC2086  # the models are words
  step "$name" "$limit" fwd "$OUT/$name.json" \
    python3 tools/analysis/benchmark.py --device "$DEVICE" "$@" \
    --models $models --sizes "$size" --batch-sizes "$batch" \
    --rounds "$rounds" --warmup 5 --memory --calibration-size "$CALIBRATION" \
    --json "$OUT/$name.json"
}

# The steps that need no compiled mmcv op: correctness, forward speed, the backbone's training
# step and the profiles, each if wanted (GC_STEPS).
gpu_steps() {
  # 1. correctness: CUDA float32 (no TF32) and float16 autocast against the CPU, and against
  #    the paper-literal reference on CUDA.
  if wanted correctness; then
    # shellcheck disable=SC2086  # GC_CORRECTNESS_ARGS: extra words, e.g. "--sizes 64"
    step correctness 180 correctness "$OUT/correctness.json" \
      python3 tools/analysis/gpu_checks.py correctness --device "$DEVICE" \
      --json "$OUT/correctness.json" ${GC_CORRECTNESS_ARGS:-}
  fi
  # 2. forward speed under float16 autocast, with the CUDA allocator's peak.
  local case
  if wanted fwd_amp; then
    for case in $FWD_CASES; do
      benchmark "fwd_amp_${case%%:*}" "${case%%:*}" "${case##*:}" "${GC_FWD_ROUNDS:-30}" 180 \
        "$COMPARED" --amp
    done
  fi
  # 3. the same forwards in float32 (cuDNN's default TF32 convolutions), if time allows.
  if wanted fwd_fp32; then
    for case in $FWD_CASES; do
      if fits 45; then
        benchmark "fwd_fp32_${case%%:*}" "${case%%:*}" "${case##*:}" "${GC_FWD_ROUNDS:-20}" 120 \
          "$COMPARED"
      else
        skip "fwd_fp32_${case%%:*}" "not in the ${BUDGET_S}s budget at $(elapsed)s"
      fi
    done
  fi
  # 3b. the float16 forwards again, eager and replayed from CUDA graphs (not by default).
  if wanted fwd_graph; then
    for case in $FWD_CASES; do
      if fits 45; then
        benchmark "fwd_graph_${case%%:*}" "${case%%:*}" "${case##*:}" "${GC_FWD_ROUNDS:-30}" \
          150 "$GRAPHED" --amp
      else
        skip "fwd_graph_${case%%:*}" "not in the ${BUDGET_S}s budget at $(elapsed)s"
      fi
    done
  fi
  # 4. the backbones' training step (forward, backward, SGD) under float16 autocast.
  local size=${PROFILE_CASE%%:*} batch=${PROFILE_CASE##*:}
  if wanted bb_train_amp; then
    if fits 45; then
      benchmark bb_train_amp "$size" "$batch" 10 150 "$COMPARED" --amp --mode train
    else
      skip bb_train_amp "not in the ${BUDGET_S}s budget at $(elapsed)s"
    fi
  fi
  # 5. where SPANet-S's float16 time goes: its kernels in a forward, and in a training step.
  local mode label
  for mode in forward train; do
    label=profile; [ "$mode" = train ] && label=profile_train
    wanted "$label" || continue
    if fits 30; then
      step "$label" 120 profile "$OUT/$label.json" \
        python3 tools/analysis/gpu_checks.py profile spanet:s --device "$DEVICE" \
        --size "$size" --batch "$batch" --mode "$mode" --amp --json "$OUT/$label.json"
    else
      skip "$label" "not in the ${BUDGET_S}s budget at $(elapsed)s"
    fi
  done
}

# The steps that run mmcv's compiled ops: RetinaNet training steps with --amp as a user runs
# them, SPANet-S then ResNet-50, on the generated COCO-style data.
training_steps() {
  if wanted train || wanted train_r50; then
    make_data
  fi
  if wanted train; then
    train_run train_spanet_s configs/mmdet/retinanet_spanet_s_1x.py 240
  fi
  if wanted train_r50; then
    local r50=$SCRATCH/retinanet_r50_fpn_1x_coco.py
    printf "_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n" > "$r50"
    if fits 60; then
      train_run train_r50 "$r50" 180
    else
      skip train_r50 "not in the ${BUDGET_S}s budget at $(elapsed)s"
    fi
  fi
}

phase_measure() {
  report_machine
  if ! mmcv_ready || ! python3 -c 'import mmdet, mmpretrain, mmseg' > /dev/null 2>&1; then
    say "the build phase's /tmp is gone (a fresh machine?): installing and building first"
    wheels_step || return 0
    build_step "$OUT/mmcv_build.log" || return 0
  fi
  say "budget for optional steps: ${BUDGET_S}s; steps: $STEPS"
  gpu_steps
  training_steps
}

# -- the table ------------------------------------------------------------------------------

TABLE_MODELS="spanet:s spanetv2:s18_pure spanetv2:s18_hybrid convnext:tiny"
TABLE_STEPS=${GC_TABLE_STEPS:-fwd,train,retina,compiled,retina_compile}
TABLE_RESERVE=20  # seconds kept for printing the table

table_wanted() { [[ ",$TABLE_STEPS," == *",$1,"* ]]; }

# bounded_step NAME LIMIT MIN_S NOTE_KIND NOTE_FILE CMD...: step with its limit cut to what is
# left of the budget, skipped if under MIN_S is left.
bounded_step() {
  local name=$1 limit=$2 min=$3; shift 3
  local left=$(( BUDGET_S - $(elapsed) - TABLE_RESERVE ))
  if [ "$left" -lt "$min" ]; then
    skip "$name" "not in the ${BUDGET_S}s budget at $(elapsed)s"
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  step "$name" "$limit" "$@"
}

table_benchmark() {  # NAME SIZE BATCH ROUNDS LIMIT MIN_S "MODELS" [benchmark.py options...]
  local name=$1 size=$2 batch=$3 rounds=$4 limit=$5 min=$6 models=$7; shift 7
  local amp=() memory=(--memory)
  [ "${GC_AMP:-1}" = 1 ] && amp=(--amp)
  # (the CPU's peaks take a fresh process per case: a dry run goes without them)
  [ "$DEVICE" = cpu ] && memory=()
  # shellcheck disable=SC2086  # the models are words
  bounded_step "$name" "$limit" "$min" fwd "$OUT/$name.json" \
    python3 tools/analysis/benchmark.py --device "$DEVICE" "${amp[@]}" "${memory[@]}" "$@" \
    --models $models --sizes "$size" --batch-sizes "$batch" --rounds "$rounds" \
    --warmup "${GC_TABLE_WARMUP:-5}" --calibration-size "$CALIBRATION" --json "$OUT/$name.json"
}

table_retina() {  # LABEL CONFIG LIMIT MIN_S [CFG_OPTION...]: a RetinaNet run and its stats
  local label=$1 config=$2 limit=$3 min=$4; shift 4
  local left=$(( BUDGET_S - $(elapsed) - TABLE_RESERVE - 15 ))
  if [ "$left" -lt "$min" ]; then
    skip "$label" "not in the ${BUDGET_S}s budget at $(elapsed)s"
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  train_run "$label" "$config" "$limit" "$@"
}

table_steps() {
  local fwd=${GC_TABLE_FWD:-224:128} rounds=${GC_TABLE_ROUNDS:-20} case compiled='' m
  rm -f "$OUT"/table_*.json "$OUT/table.md"
  TRAIN_JSON=$OUT/table_retina.json  # (train_run's stats go there)
  if table_wanted fwd; then
    table_benchmark table_fwd "${fwd%%:*}" "${fwd##*:}" "$rounds" 150 30 "$TABLE_MODELS"
  fi
  if table_wanted train; then
    for case in ${GC_TABLE_TRAIN:-224:64 800x1216:2}; do
      table_benchmark "table_train_${case%%:*}" "${case%%:*}" "${case##*:}" \
        "${GC_TABLE_TRAIN_ROUNDS:-10}" 150 30 \
        "$TABLE_MODELS" --mode train
    done
  fi
  local r50=$SCRATCH/retinanet_r50_fpn_1x_coco.py
  printf "_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n" > "$r50"
  if table_wanted retina || table_wanted retina_compile; then
    make_data
  fi
  if table_wanted retina; then
    table_retina retina_spanet_s configs/mmdet/retinanet_spanet_s_1x.py 150 45
    table_retina retina_r50 "$r50" 120 40
  fi
  if table_wanted compiled; then
    for m in $TABLE_MODELS; do compiled="$compiled $m $m@compiled"; done
    # (compiling takes most of it: each model once, for this input, before the timing)
    table_benchmark table_compiled "${fwd%%:*}" "${fwd##*:}" "$rounds" 360 120 "$compiled"
  fi
  if table_wanted retina_compile; then
    table_retina retina_spanet_s_compile configs/mmdet/retinanet_spanet_s_1x.py 240 90 \
      compile=True
    table_retina retina_r50_compile "$r50" 180 60 compile=True
  fi
  echo
  say "=== table"
  python3 tools/analysis/gpu_checks.py table "$OUT" > "$OUT/table.md" || RC=1
  cat "$OUT/table.md"
}

phase_table() {
  report_machine
  if ! mmcv_ready || ! python3 -c 'import mmdet, mmpretrain, mmseg' > /dev/null 2>&1; then
    say "the build phase's /tmp is gone (a fresh machine?): installing and building first," \
      "outside the table's ${BUDGET_S}s budget"
    wheels_step || return 0
    build_step "$OUT/mmcv_build.log" || return 0
    START=$(date +%s)
  fi
  say "budget: ${BUDGET_S}s; steps: $TABLE_STEPS"
  table_steps
}

phase_all() {
  report_machine
  wheels_step || return 0
  local t0=$(date +%s)
  if [ ! -f "$MMCV_SRC/setup.py" ] && [ -f "$WHL/mmcv-$MMCV_VERSION.tar.gz" ]; then
    tar -xzf "$WHL/mmcv-$MMCV_VERSION.tar.gz" -C "$SCRATCH"
  fi
  # Until the built package lands in $SITE, mmcv's Python part comes from its source tree:
  # enough for the backbones, the benchmark and the correctness check.
  export PYTHONPATH=$PYTHONPATH:$MMCV_SRC
  local jobs=$(nproc) rc_file=$SCRATCH/mmcv_build.rc
  [ "$jobs" -gt 4 ] && jobs=$(( jobs - 2 ))
  rm -f "$rc_file"
  say "mmcv builds in the background ($jobs jobs, niced; its output in $OUT/mmcv_build.out)"
  # (the status goes to its own file: build_mmcv's report goes to mmcv_build.out)
  ( if MMCV_JOBS=$jobs MMCV_NICE=10 build_mmcv "$OUT/mmcv_build.log"; then echo 0 > "$rc_file"
    else echo 1 > "$rc_file"; fi ) > "$OUT/mmcv_build.out" 2>&1 &
  local build_pid=$!
  say "budget for optional steps: ${BUDGET_S}s; steps: $STEPS"
  gpu_steps
  # (the data too waits: its COCO writer imports mmdet's datasets, and so mmcv's ops)
  say "waiting for the mmcv build"
  wait "$build_pid" || true
  cat "$OUT/mmcv_build.out"
  if [ "$(cat "$rc_file" 2>/dev/null)" = 0 ]; then
    record mmcv_build OK $(( $(date +%s) - t0 )) \
      "in the background, $jobs jobs; done at $(elapsed)s"
  else
    record mmcv_build FAILED $(( $(date +%s) - t0 )) "see mmcv_build.out, mmcv_build.log"
    RC=1
    return
  fi
  step smoke 120 - - python3 tools/analysis/gpu_checks.py smoke --device "$DEVICE"
  training_steps
}

main() {
  : > "$SUMMARY"
  say "gpu_checks.sh $PHASE"
  "phase_$PHASE"
  print_summary
  return "$RC"
}

# pipefail: the script's exit status is main's.
main 2>&1 | tee "$OUT/$PHASE.log"
