#!/usr/bin/env bash
# GPU benchmark of jfjoch_process: frames/s per stage on CPU and GPU side by side.
#
# On a machine with an NVIDIA GPU: installs jfx and jax[cuda12] into a venv (OUT/venv),
# simulates a JUNGFRAU-4M stills set and a rotation set (jfx-simulate --modules 8), and for
# each runs jfjoch_process on the CPU and on the GPU (general.device=cpu|gpu; a first run
# compiles, the second is reported), printing per stage (read, spot finding, indexing,
# refinement, integration, scaling) frames/s, the batch size used and the peak GPU memory.
# Without a GPU it says so and runs the CPU part with the current python3 (jfx installed).
#
# Usage: experiments/gpu_benchmark/run.sh [OUT]   (environment: N_STILLS=40 N_ROTATION=40)
# Sized to finish within 8 minutes (docs/performance.md, "GPU benchmark script").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/jfx_gpu_benchmark}
N_STILLS=${N_STILLS:-40}
N_ROTATION=${N_ROTATION:-40}
mkdir -p "$OUT"
T0=$(date +%s)

PY=python3
DEVICES="cpu"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU: $(nvidia-smi -L | head -1)"
    if [ ! -x "$OUT/venv/bin/python" ]; then
        python3 -m venv "$OUT/venv"
        "$OUT/venv/bin/python" -m pip install -q -e "$ROOT" "jax[cuda12]"
    fi
    PY="$OUT/venv/bin/python"
    if "$PY" -c "import jax, sys; sys.exit(0 if jax.devices('gpu') else 1)" 2>/dev/null; then
        DEVICES="cpu gpu"
    else
        echo "jax[cuda12] sees no GPU: CPU part only"
    fi
else
    echo "no NVIDIA GPU on this machine (nvidia-smi finds none): CPU part only"
fi
echo "python: $PY; devices: $DEVICES; $N_STILLS stills, $N_ROTATION rotation images (JUNGFRAU-4M)"

"$PY" -m jfx.sim.cli --preset lyso_serial --modules 8 --n-images "$N_STILLS" \
    -o "$OUT/stills" -q
"$PY" -m jfx.sim.cli --preset lyso_rotation --modules 8 --n-images "$N_ROTATION" \
    -o "$OUT/rotation" -q
echo "simulated in $(( $(date +%s) - T0 )) s"

for dev in $DEVICES; do
    for rep in warm-up measured; do
        "$PY" "$ROOT/experiments/gpu_benchmark/stages.py" --master "$OUT/stills_master.h5" \
            --out "$OUT/stills_$dev" --device "$dev" --label "stills [$rep]" -- \
            -X ffbidx -C 79.1,79.1,38,90,90,90 -S 96 -M | { [ "$rep" = measured ] && cat || cat >/dev/null; }
        "$PY" "$ROOT/experiments/gpu_benchmark/stages.py" --master "$OUT/rotation_master.h5" \
            --out "$OUT/rotation_$dev" --device "$dev" --label "rotation [$rep]" -- \
            -R -S 96 -M | { [ "$rep" = measured ] && cat || cat >/dev/null; }
    done
done
echo "total $(( $(date +%s) - T0 )) s"
