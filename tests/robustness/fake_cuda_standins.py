"""
The fake CUDA device's stand-ins for torch's CUDA-only pieces that need no fake tensor: fake_cuda.py installs them
(see its docstring) and its importers read these names from it.

- sdpa_backend: the kernel CUDA picks for a scaled_dot_product_attention call (flash, memory-efficient or math).
- fake_compile: torch.compile, which dynamo cannot trace through the fake tensor: the function runs eagerly and
  its settings are recorded (compiles).
- tag / restore: torch.save's location tag cuda:0 for a fake's storage (saving), and torch.load of such a tag
  without map_location, which keeps the data on the CPU and counts the bytes a GPU would hold (cuda_loads).
- CudaAutocast: torch.autocast("cuda", ...) as CPU autocast.
"""
import collections

import torch

HALF = (torch.float16, torch.bfloat16)
compiles = []  # torch.compile's settings, one dict per call (fake_compile)
cuda_loads = collections.Counter()  # bytes torch.load put "on cuda:0" (a location tag read without map_location)
saving = set()  # data pointers of fake storages being written by torch.save, to tag them cuda:0


def sdpa_backend(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """(kernel, why not a fused one) that PyTorch 2.13 picks on an H100 for these inputs: flash, then memory-
    efficient, then math (cuDNN ranks after math), each taken when its rules hold (the docs of
    scaled_dot_product_attention and torch.nn.attention; aten/src/ATen/native/transformers/cuda/sdp_utils.cpp):
    - both: 4-D q, k, v, a last dimension of stride 1 (the mask's too), equal batch sizes;
    - flash: no mask, fp16 / bf16, equal head dims, a multiple of 8 up to 256, is_causal only with as many queries
      as keys; grouped-query heads only with enable_gqa;
    - memory-efficient: fp16 / bf16 / fp32, head dims a multiple of 8 (fp32: 4), storage offsets aligned to it,
      masks allowed; no grouped-query heads ("GQA currently works only for Flash_attention and math kernel").
    CUDA autocast computes it in the autocast dtype."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    if not torch.is_autocast_enabled("cpu") and not q.dtype == k.dtype == v.dtype:
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: {q.dtype} "
                           f"key.dtype: {k.dtype} and value.dtype: {v.dtype} instead.")
    D, heads = q.size(-1), (q.size(-3), k.size(-3), v.size(-3))
    both = [(q.dim() == k.dim() == v.dim() == 4, "q, k, v not 4-D"),
            (all(x.stride(-1) == 1 for x in (q, k, v)) and (attn_mask is None or attn_mask.stride(-1) == 1),
             "a last dimension not contiguous"), (q.size(0) == k.size(0) == v.size(0), "batch sizes differ")]
    gqa = heads[0] != heads[1] or heads[1] != heads[2]
    flash = both + [(attn_mask is None, "a mask"), (dtype in HALF, f"{dtype}"),
                    (D == k.size(-1) == v.size(-1) and D % 8 == 0 and D <= 256, f"head dim {D}"),
                    (not is_causal or q.size(-2) == k.size(-2), "is_causal with fewer queries than keys"),
                    (not gqa or enable_gqa and heads[0] % heads[1] == 0 and heads[1] == heads[2], "grouped heads")]
    align = 8 if dtype in HALF else 4
    efficient = both + [(dtype in (*HALF, torch.float32), f"{dtype}"),
                        (D == k.size(-1) and D % align == 0 and v.size(-1) % align == 0, f"head dim {D}"),
                        (all(x.storage_offset() % align == 0 for x in (q, k, v)), "a storage offset not aligned"),
                        (not gqa, f"grouped-query heads {heads[0]} / {heads[1]}")]
    enabled = torch.backends.cuda
    for name, rules, on in (("flash", flash, enabled.flash_sdp_enabled()),
                            ("efficient", efficient, enabled.mem_efficient_sdp_enabled())):
        if on and all(ok for ok, _ in rules):
            return name, ""
    why = "; ".join(f"{name}: {next(why for ok, why in rules if not ok) if on else 'disabled'}"
                    for name, rules, on in (("flash", flash, enabled.flash_sdp_enabled()),
                                            ("efficient", efficient, enabled.mem_efficient_sdp_enabled())))
    if not enabled.math_sdp_enabled():
        raise RuntimeError(f"No available kernel. Aborting execution. ({why})")
    return "math", why


def fake_compile(model=None, **settings):
    """torch.compile on the fake device: the function as it is (dynamo cannot trace FakeCudaTensor), its settings
    recorded in `compiles`."""
    if model is None:
        return lambda fn: fake_compile(fn, **settings)
    compiles.append(settings)
    return model


def tag(storage):
    """torch.save's location tag: cuda:0 for a fake's storage being written."""
    if storage.device.type == "cpu" and storage.nbytes() and storage.data_ptr() in saving:
        return "cuda:0"
    return None


def restore(storage, location):
    """torch.load without map_location of a cuda-tagged storage: keep it on the CPU, count it as a GPU would
    hold it."""
    if location.startswith("cuda"):
        cuda_loads[location] += storage.nbytes()
        return storage
    return None


class CudaAutocast(torch.amp.autocast_mode.autocast):
    """torch.autocast("cuda", ...) as CPU autocast: the fake tensors' data is on the CPU."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        super().__init__("cpu" if device_type.startswith("cuda") else device_type, dtype, enabled, cache_enabled)
