#!/usr/bin/env bash
# The paper's MM-WHS experiment, from the challenge's training folder to the table.
#
#   examples/mmwhs/run.sh ct /data/MM-WHS/ct_train runs/mmwhs-ct [duoseg train options]
#   examples/mmwhs/run.sh mr /data/MM-WHS/mr_train runs/mmwhs-mr
#
# The folder holds {ct,mr}_train_1001 .. 1020 _image/_label .nii.gz as downloaded.
# As in the paper (Sec. 3): 15 volumes for 3-fold cross-validation training, the other
# 5 held out. Each fold trains wang2018 and the 2 mm U-Net baseline on 10 volumes,
# validates on 5, and predicts the 5 held-out volumes; the table is over all folds.
# Extra arguments go to every `duoseg train` (e.g. --set train.device="cpu").
set -euo pipefail
modality=$1 source=$2 out=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
folds=("1001 1002 1003 1004 1005" "1006 1007 1008 1009 1010" "1011 1012 1013 1014 1015")
held_out=(1016 1017 1018 1019 1020)

mkdir -p "$out/cv" "$out/test"
for n in $(seq 1001 1015); do
  for part in image label; do
    ln -sf "$(realpath "$source/${modality}_train_${n}_${part}.nii.gz")" "$out/cv/"
  done
done
for n in "${held_out[@]}"; do
  for part in image label; do
    ln -sf "$(realpath "$source/${modality}_train_${n}_${part}.nii.gz")" "$out/test/"
  done
done
duoseg cache build "$out/cv" "$out/cv.zarr" --level baseline=2   # 3 mm + the baseline's 2 mm levels

for fold in 0 1 2; do
  validation=$(printf '"%s_train_%s",' $(for n in ${folds[$fold]}; do echo "$modality" "$n"; done))
  for model in "$modality" "${modality}_baseline"; do
    run="$out/fold$fold/$model"
    duoseg train "$here/$model.toml" --cache "$out/cv.zarr" --out "$run" \
      --set "data.validation_cases=[${validation%,}]" "$@"
    duoseg predict "$run" "$out/test" "$out/fold$fold/pred-$model" --device "${DEVICE:-cuda}"
    duoseg evaluate "$out/fold$fold/pred-$model" "$out/test" --json "$out/fold$fold/$model.json"
  done
done
