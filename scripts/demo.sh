#!/usr/bin/env bash
# The whole embedtab chain on sample_data/, into ./artifacts-demo (run via `make demo`).
# Offline: text uses the packaged all-MiniLM-L6-v2, images the seeded smoke CLIP.
set -euo pipefail
cd "$(dirname "$0")/.."
export EMBEDTAB_ARTIFACTS="${EMBEDTAB_ARTIFACTS:-artifacts-demo}"
export HF_HUB_OFFLINE=1
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step embedtab encode text sample_data/items.parquet --template '{title}. {description}' --name text
step embedtab encode image sample_data/items.parquet --model embedtab-smoke-clip --name image
step embedtab reduce text --dims 64
step embedtab reduce image --dims 16

# The item, user and context workflows own the id spaces; interactions and session take their
# vocabularies from them, so an item has one id in every dataset and lookup below.
step embedtab fit-workflow configs/item.yaml --data sample_data/items.parquet
step embedtab fit-workflow configs/user.yaml --data sample_data/users.parquet
step embedtab fit-workflow configs/context.yaml --data sample_data/interactions
step embedtab fit-workflow configs/interactions.yaml --data 'sample_data/interactions/day_[12].parquet'
step embedtab fit-workflow configs/session.yaml --data sample_data/interactions

step embedtab transform item --data sample_data/items.parquet --name item-features
step embedtab transform user --data sample_data/users.parquet --name user-features
step embedtab transform interactions --data 'sample_data/interactions/day_[12].parquet' --name train --mask
step embedtab transform interactions --data sample_data/interactions/day_3.parquet --name valid
step embedtab transform session --data sample_data/interactions --name sessions

step embedtab lookup --embeddings text-pca64 --workflow interactions --column item_id --name text-train
step embedtab lookup --embeddings image-pca16 --workflow interactions --column item_id --name image-train
step embedtab lookup --embeddings text-pca64 --workflow item --column item_id --name text-catalog

step embedtab export triton

step embedtab status
