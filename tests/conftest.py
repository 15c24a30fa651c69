"""Shared test setup: offline, no trackers, small thread count on the 2-core CI machines."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ATELIER_OFFLINE", "1")  # pretrained weights must never be downloaded in tests
