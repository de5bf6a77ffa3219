#!/usr/bin/env bash
# The GPU check of issue 17: on a machine with one CUDA GPU, in this order, each part under a time limit of its own
# and all of them within a budget of 9 minutes (GPU_CHECK_BUDGET_S, default 540; GPU_CHECK_LIMIT_SCALE multiplies
# the limits, 5 when rehearsing on a CPU, whose budget is an hour):
#   tests           every test marked `gpu` (they all live in tests/gpu)
#   sweep           python -m sweep.run on the embedded demo: 2 trials, one GPU worker each, soups and MLflow
#   train_step      bench/train_step.py, ViT-B/32: ours vs a bare loop, eager and compiled (inductor)
#   input_pipeline  bench/input_pipeline.py, ViT-B/32: our store + loader vs the ceiling and PIL + DataLoader
#   soup_memory     bench/soup_memory.py: the soup stage with 16 ViT-B/32-size ingredients
#   (bench = train_step input_pipeline soup_memory)
# Everything printed goes to $OUT/gpu_check.txt (after the GPU, driver and package versions), the parts' status,
# time and headline numbers to $OUT/gpu_check.json. OUT defaults to a new folder under /tmp.
#
#   bash bench/gpu_check.sh                       # every part, on the GPU
#   bash bench/gpu_check.sh tests sweep           # only these (to rerun what failed)
#   bash bench/gpu_check.sh --cpu-rehearsal       # the same parts on a CPU, smaller; CUDA-only tests skip
#
# On the lent GPU machine (Python 3.12 and torch with CUDA; no ray, mlflow, optuna or open_clip, no network):
# once, here, in the repository's root (the checkout the device tool sends), pack what it lacks (~40 MB, ~3 min):
#   grep -qx /.pysite/ .git/info/exclude || echo /.pysite/ >> .git/info/exclude; bash ../shared/device/make-wheels.sh
# then one call of the device tool's run, carry [".pysite"], timeout_s 600, command:
#   tar -xJf .pysite/site.tar.xz -C .pysite && export PYTHONPATH=$PWD/.pysite/site:$PWD PYTHONUNBUFFERED=1 && bash bench/gpu_check.sh
# ($OUT/gpu_check.txt and .json come back; to rerun parts, name them after gpu_check.sh in the same command.)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mode=gpu
parts=()
for arg in "$@"; do
  case "$arg" in
    --cpu-rehearsal) mode=cpu-rehearsal ;;
    tests|sweep|train_step|input_pipeline|soup_memory) parts+=("$arg") ;;
    bench) parts+=(train_step input_pipeline soup_memory) ;;
    *) echo "gpu_check.sh: unknown part '$arg': name tests, sweep, bench (= train_step input_pipeline" \
            "soup_memory) or --cpu-rehearsal" >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(tests sweep train_step input_pipeline soup_memory)
out=${OUT:-/tmp/gpu-check-$(date -u +%Y%m%d-%H%M%S)-$$}  # made after the checks below
if [ -e "$out/gpu_check.txt" ] || [ -e "$out/gpu_check.json" ]; then
  echo "gpu_check.sh: $out already holds gpu_check.txt or .json: move them away or set OUT to another folder" >&2
  exit 2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # this tree first; unbuffered: output before a time-out is kept
"$PYTHON" bench/gpu_check.py preflight "$mode" || exit 2
mkdir -p "$out"
txt=$out/gpu_check.txt json=$out/gpu_check.json
work=$(mktemp -d /tmp/gpu-check-work.XXXXXX)
export RAY_TMPDIR=$work/ray  # this run's own Ray: never another cluster on the machine, and known to stop
unset RAY_ADDRESS
budget=${GPU_CHECK_BUDGET_S:-540}
scale=${GPU_CHECK_LIMIT_SCALE:-1}  # each part's limit times this: a shared 2-core CPU runs far slower than the GPU
if [ "$mode" != gpu ]; then budget=${GPU_CHECK_BUDGET_S:-3600} scale=${GPU_CHECK_LIMIT_SCALE:-5}; fi
stop_our_ray() {  # Ray processes this run started (their command lines name its temporary folder), by PID
  local pids
  pids=$(pgrep -f "$work/ray" || true)
  [ -z "$pids" ] || kill $pids 2>/dev/null
  sleep 1
  pids=$(pgrep -f "$work/ray" || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null
}
finish() { stop_our_ray; [ -n "${GPU_CHECK_KEEP:-}" ] || rm -rf "$work"; }
trap finish EXIT

# run PART LIMIT_S COMMAND...: one step of a part under min(LIMIT_S, what is left of the budget), its output
# appended to the report and to the part's log; returns the command's status (124: it ran out of time).
run() {
  local part=$1 limit=$(($2 * scale)) left=$((budget - SECONDS))
  shift 2
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "[$part] not run: the budget of ${budget}s is spent" | tee -a "$txt" "$work/$part.log"
    return 125
  fi
  echo "\$ $* (limit ${limit}s)" | tee -a "$txt" "$work/$part.log"
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$txt" "$work/$part.log"
}

part_tests() {
  run tests 150 "$PYTHON" -m pytest -m gpu tests/gpu -q -rs -p no:randomly -p no:cacheprovider \
    --basetemp="$work/pytest" -o addopts="--durations=10"
}

part_sweep() {
  local sets=(--set search.num_samples=2 --set resources.workers=1 --set resources.cpus_per_worker=2
              --set storage_path="$work/sweep/results" --set mlflow.tracking_uri="sqlite:///$work/sweep/mlflow.db")
  if [ "$mode" = gpu ]; then
    sets+=(--set resources.gpus_per_worker=1)
  else  # two cores: fewer epochs, the demo's own 8-12 take minutes per trial here
    sets+=(--set resources.cpus_per_worker=0.5 --set 'search.space.optim.epochs={randint: [2, 3]}')
  fi
  mkdir -p "$work/sweep"
  (cd "$work/sweep" && run sweep 200 "$PYTHON" -m sweep.run "${sets[@]}")
  local status=$?
  stop_our_ray
  return $status
}

part_train_step() {
  local args=(--model ViT-B-32 --batch 256 --rounds 3 --steps 30) status=0
  [ "$mode" = gpu ] || args=(--threads 1 --rounds 3 --steps 5)
  run train_step 60 "$PYTHON" bench/train_step.py "${args[@]}" || status=$?
  run train_step 150 "$PYTHON" bench/train_step.py "${args[@]}" --compile || status=$?
  return $status
}

part_input_pipeline() {
  local args=(--images 5000 --model ViT-B-32 --size 224 --store-size 256 --batch 256 --warmup 5 --steps 20
              --eval-images 4096 --workers 16 --device cuda)
  [ "$mode" = gpu ] || args=(--images 512 --model soupsweep-tiny-vit --size 32 --store-size 64 --batch 32
                            --warmup 3 --steps 10 --eval-images 512 --workers 2 --threads 1)
  run input_pipeline 100 "$PYTHON" bench/input_pipeline.py "${args[@]}" --dir "$work/input_pipeline"
}

part_soup_memory() {
  local args=(--preset h100 --heldout 5000 --other 1000)
  [ "$mode" = gpu ] || args=(--preset cpu --counts 2)
  run soup_memory 150 "$PYTHON" bench/soup_memory.py "${args[@]}"
}

{ echo "bash bench/gpu_check.sh $* ($mode; parts: ${parts[*]}; budget ${budget}s)"
  "$PYTHON" bench/gpu_check.py versions "$json" "$mode"; } 2>&1 | tee "$txt"
failed=()
for part in "${parts[@]}"; do
  echo -e "\n=== $part" | tee -a "$txt"
  start=$SECONDS
  "part_$part"
  status=$?
  case $status in 0) result=passed ;; 124|137) result="timed out" ;; 125) result="not run" ;; *) result=failed ;; esac
  [ "$status" = 0 ] || failed+=("$part")
  echo "=== $part: $result in $((SECONDS - start))s" | tee -a "$txt"
  "$PYTHON" bench/gpu_check.py record "$json" "$part" "$result" $((SECONDS - start)) "$work/$part.log"
done
echo -e "\nwhole check: ${SECONDS}s; report: $txt, numbers: $json" | tee -a "$txt"
if [ ${#failed[@]} -gt 0 ]; then
  flag=""; [ "$mode" = gpu ] || flag="--cpu-rehearsal "
  echo "not passed: ${failed[*]}; rerun only those with: bash bench/gpu_check.sh $flag${failed[*]}" | tee -a "$txt"
  exit 1
fi
