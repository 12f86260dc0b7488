"""A classifier as critic keeps and runs it: its folder (folder.py), its card (card.py), where and how it runs
(runtime.py), the row-wise attention critic runs on CPUs (attention.py) and the calibration folded into its head
(calibration.py). This module re-exports the folder's and the runtime's names: `modeling.load`, `modeling.softmax`."""

from critic.modeling.card import model_card
from critic.modeling.folder import (COMPLETE, DROPOUT_FIELDS, EXPORT_RECORD, META_FILE, SAVING, WEIGHTS, build,
                                    drop_stale_exports, export_mismatch, finish_saving, foreign_meta, load,
                                    quiet_transformers, run_complete, save, tie_to_weights, update_meta,
                                    weights_file, write_meta, write_set, write_text_atomic)
from critic.modeling.runtime import (READY_MASK_MODELS, autocast, cpu_has_bf16, device_batch, inference_model, logits,
                                     pad_multiple, ready_mask, resolve_device, resolve_precision, softmax,
                                     torch_forward)

__all__ = ["COMPLETE", "DROPOUT_FIELDS", "EXPORT_RECORD", "META_FILE", "READY_MASK_MODELS", "SAVING", "WEIGHTS",
           "autocast", "build", "cpu_has_bf16", "device_batch", "drop_stale_exports", "export_mismatch",
           "finish_saving", "foreign_meta", "inference_model", "load", "logits", "model_card", "pad_multiple",
           "quiet_transformers", "ready_mask", "resolve_device", "resolve_precision", "run_complete", "save",
           "softmax", "tie_to_weights", "torch_forward", "update_meta", "weights_file", "write_meta", "write_set",
           "write_text_atomic"]
