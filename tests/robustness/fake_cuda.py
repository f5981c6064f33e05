"""
A fake CUDA device, so CPU CI runs the GPU path: tensors "on cuda:0" keep their data on the CPU but
say they are on cuda:0, and mixing them with CPU tensors fails as it does on a GPU, with PyTorch's own words.

- FakeCudaTensor: a plain torch.Tensor subclass with __torch_function__ (not a wrapper subclass: one that
  reports a cuda device breaks C++ device guards on a CPU build). It reports device cuda:0 and is_cuda, and
  refuses an op that mixes it with a CPU tensor of one or more dimensions. As on a GPU, 0-dim CPU tensors mix
  freely, CPU indices may index a cuda tensor (not the reverse), a basic-slice assignment is a cross-device
  copy, shape-only calls (expand_as, view_as, ...) are not mixing and their results follow self. .grad and
  .data of a fake are fake. It counts host syncs (item, bool, tolist, nonzero, ...), so a test can pin how
  often a loop makes a GPU wait.
- FakeCudaMode: a TorchFunctionMode that turns device="cuda" in factory calls, .to("cuda"), .cuda() and
  Module.to("cuda") into fakes, and .cpu() / .to("cpu") back into plain tensors. Parameters become fakes by
  torch.__future__.set_swap_module_params_on_conversion, which keeps each parameter object (the issue's
  set_overwrite_module_params_on_conversion makes new ones, which unties Qwen2's and Llama's tied embedding and
  head: the fake run then trained two matrices and drifted from the CPU's).
- SDPA's backend choice: each scaled_dot_product_attention on cuda tensors is classified as CUDA would pick
  its kernel (sdpa_backend: flash, memory-efficient or math, from PyTorch's rules) and counted (sdpa_calls). The
  math kernel in half precision keeps every intermediate in fp32 (and repeats grouped keys to every head): on
  this device it is an error, so that CI fails on any such call in a bf16 run. With math excluded
  (torch.nn.attention.sdpa_kernel) and no fused kernel possible it fails as CUDA does ("No available kernel");
  torch._fused_sdp_choice answers with the same choice.
- torch.compile: dynamo cannot trace the subclass, so the fake device stands in for it (fake_compile): the
  function runs eagerly and its settings are recorded (compiles), for a test to check what a GPU would compile.
- fake_cuda(): the context manager that installs all of it, stubs torch.cuda's functions (is_available,
  device_count, the memory functions, synchronize), emulates CUDA autocast by CPU autocast (so dtype=bfloat16
  runs its mixed-precision path), lets clip_grad_norm_ and an AdamW not asked to fuse take their foreach path
  (CUDA's default; the CPU kernels underneath give the CPU run's numbers, bit for bit:
  tests/robustness/test_gpu_path.py; train.py's fused AdamW runs the CPU's fused kernel), and makes torch.save
  write a fake's storage as a real GPU run would: plain tensor data tagged with location cuda:0 (never the
  subclass). Loading such a tag back under the fake device counts the bytes a GPU would have put on cuda:0
  (cuda_loads).

Backward passes run without device checks: the autograd engine makes its gradient tensors itself (plain here,
on the forward tensor's device on a GPU), so a mix inside backward is the harness's artifact, not the code's.
Gradient checkpointing's recompute runs there too, on the fake inputs it saved; its check that the recomputed
tensors match the saved ones compares shapes and dtypes only, since the tensors autograd saves from inside an op
(autocast's casts) are plain in one pass and fake in the other.

The pieces that need no fake tensor (sdpa_backend, fake_compile, torch.save's tags, CUDA autocast) are in
fake_cuda_standins.py; tests read them from here, with the rest.
"""
import collections
import contextlib
import types

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._foreach_utils import _foreach_supported_types
from torch.utils._pytree import tree_flatten, tree_map

from fake_cuda_standins import (HALF, CudaAutocast, compiles, cuda_loads, fake_compile, restore, saving, sdpa_backend,
                                tag)

CUDA = torch.device("cuda:0")
GIB = 2 ** 30
MEMORY = 80 * GIB  # what the fake card reports to torch.cuda.mem_get_info
# PyTorch's own error messages (c10 TORCH_CHECKs of a CUDA build)
MIXED = "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
INDEX = "indices should be either on cpu or on the same device as the indexed tensor (cpu)"
NUMPY = "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first."

syncs = collections.Counter()  # host syncs by call name: each one makes the CPU wait for the GPU
sdpa_calls = collections.Counter()  # scaled_dot_product_attention calls on cuda tensors by the kernel CUDA picks
_state = dict(backward=0)  # > 0 inside a backward pass: the engine's plain gradients are not checked

_GETSET = torch._C.TensorBase.__dict__
_GETTERS = {_GETSET[n]: n for n in ("device", "is_cuda", "is_cpu", "grad", "_grad", "data")}
# calls that read only shapes or types: not mixing (Module.to asks _has_compatible_shallow_copy_type)
SHAPE_ONLY = {Tensor.expand_as, Tensor.view_as, Tensor.reshape_as, Tensor.size, Tensor.dim, Tensor.numel,
              torch.numel, Tensor.__len__, torch._has_compatible_shallow_copy_type}
SYNCS = {Tensor.item, Tensor.__bool__, Tensor.tolist, Tensor.__int__, Tensor.__float__, Tensor.__index__,
         Tensor.nonzero, torch.nonzero, torch.unique, Tensor.unique, torch.masked_select, Tensor.masked_select,
         Tensor.__format__, Tensor.__repr__}
BACKWARD = {Tensor.backward, torch.autograd.backward, torch.autograd.grad}


def is_fake(x):
    return isinstance(x, FakeCudaTensor)


def to_fake(x):
    if type(x) is not Tensor:
        return x
    if x.requires_grad and x.grad_fn is None:  # a leaf stays a leaf (as_subclass would hang it off x's graph)
        return x.detach().as_subclass(FakeCudaTensor).requires_grad_()
    return x.as_subclass(FakeCudaTensor)


def to_plain(x):
    return x.as_subclass(Tensor) if is_fake(x) else x


def _tensors(*trees):
    return [x for x in tree_flatten(trees)[0] if isinstance(x, Tensor)]


def _advanced(key):
    """Whether an indexing key holds a tensor (advanced indexing: index/index_put, not a view and copy_)."""
    return bool(_tensors(key))


def check(func, args, kwargs):
    """Raise what a GPU raises when `func` mixes a cuda tensor with a CPU one of one or more dimensions."""
    if func in SHAPE_ONLY or func is Tensor.copy_ or _state["backward"]:
        return
    if func in (Tensor.__getitem__, Tensor.__setitem__):
        self, key = args[0], args[1]
        if not is_fake(self) and any(is_fake(k) for k in _tensors(key)):  # a cuda index into a CPU tensor
            raise IndexError(INDEX)
        if func is Tensor.__setitem__ and _advanced(key):  # index_put_: the values on self's device (or 0-dim)
            value = args[2]
            if isinstance(value, Tensor) and value.dim() > 0 and is_fake(value) != is_fake(self):
                raise RuntimeError(MIXED)
        return  # a basic-slice assignment is copy_: any device
    found = _tensors(args, kwargs)
    if any(is_fake(x) for x in found) and any(not is_fake(x) and x.dim() > 0 for x in found):
        raise RuntimeError(MIXED)


SDPA = torch.nn.functional.scaled_dot_product_attention


def attend(args, kwargs):
    """scaled_dot_product_attention on fakes: classified and counted (sdpa_backend); half precision on the math
    kernel is an error. The CPU computes it with every CPU kernel allowed (math excluded there means nothing)."""
    plain, kwargs_plain = [to_plain(x) for x in args], {k: to_plain(v) for k, v in kwargs.items()}
    kernel, why = sdpa_backend(*plain, **kwargs_plain)
    sdpa_calls[kernel] += 1
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else plain[0].dtype
    if kernel == "math" and dtype in HALF:
        raise RuntimeError(f"fake cuda: scaled_dot_product_attention in {dtype} would run the math kernel, fp32 "
                           f"intermediates ({why}); shapes q {tuple(plain[0].shape)} k {tuple(plain[1].shape)}")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with torch._C.DisableTorchFunctionSubclass(), sdpa_kernel([SDPBackend.MATH, SDPBackend.FLASH_ATTENTION]):
        return to_fake(SDPA(*args, **kwargs))


def count_sync(func, args):
    if func in SYNCS:
        syncs[func.__name__] += 1
    elif func is Tensor.__getitem__ and any(k.dtype == torch.bool for k in _tensors(args[1])):
        syncs["boolean index"] += 1  # the result's size depends on the mask's values
    elif func in (Tensor.repeat_interleave, torch.repeat_interleave) and len(args) > 1 and isinstance(args[1], Tensor):
        syncs["repeat_interleave"] += 1


def move(func, args, kwargs):
    """Tensor.to / .cuda / .cpu: to a fake (a copy, as a host-to-device copy is), to a plain tensor (a
    device-to-host copy: a sync), or, with no device, a dtype change that stays where it is."""
    self, kwargs = args[0], dict(kwargs)
    copy = kwargs.pop("copy", False)
    if func is Tensor.cuda:
        target, dtype, memory_format = CUDA, None, kwargs.get("memory_format", torch.preserve_format)
    elif func is Tensor.cpu:
        target, dtype, memory_format = torch.device("cpu"), None, kwargs.get("memory_format", torch.preserve_format)
    else:
        other = next((a for a in (*args[1:], *kwargs.values()) if isinstance(a, Tensor)), None)
        if other is not None:  # x.to(other): other's device and dtype (its reported device)
            target, dtype, memory_format = other.device, other.dtype, torch.preserve_format
        else:
            target, dtype, _, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
    base = to_plain(self)
    dtype = dtype or base.dtype
    to_cuda = target.type == "cuda" if target is not None else is_fake(self)
    if to_cuda and is_fake(self) and dtype == base.dtype and not copy:
        return self  # already there: .to returns self, as torch does
    if is_fake(self) and not to_cuda:
        syncs["to cpu"] += 1
    with torch._C.DisableTorchFunctionSubclass():
        out = base.to(dtype=dtype, copy=copy or (to_cuda != is_fake(self)), memory_format=memory_format)
    return to_fake(out) if to_cuda else out


class FakeCudaTensor(Tensor):
    """CPU data that says it lives on cuda:0 (see the module docstring)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        getter = _GETTERS.get(getattr(func, "__self__", None))
        if getter == "device":
            return CUDA
        if getter in ("is_cuda", "is_cpu"):
            return getter == "is_cuda"
        if func is Tensor.get_device:
            return 0
        if func is Tensor.numpy:
            raise TypeError(NUMPY)
        if func in (Tensor.to, Tensor.cuda, Tensor.cpu):
            return move(func, args, kwargs)
        if func in BACKWARD:
            return backward(func, args, kwargs)
        check(func, args, kwargs)
        count_sync(func, args)
        if func is SDPA:
            return attend(args, kwargs)
        if func is torch._fused_sdp_choice:  # the backend torch would pick: CUDA's, as above
            from torch.nn.attention import SDPBackend
            plain = tree_map(to_plain, (args, kwargs))
            return int(SDPBackend.__members__[dict(flash="FLASH_ATTENTION", efficient="EFFICIENT_ATTENTION",
                                                   math="MATH")[sdpa_backend(*plain[0], **plain[1])[0]]])
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if getter in ("grad", "_grad", "data"):  # attribute reads of a fake are fake
            return to_fake(out)
        if func is Tensor.__setitem__ or out is None:
            return out
        # results follow self where mixing was allowed (shape-only calls, CPU tensors indexed or sliced)
        follow = args and isinstance(args[0], Tensor) and not is_fake(args[0]) and func in (
            SHAPE_ONLY | {Tensor.__getitem__})
        return tree_map(lambda x: to_plain(x) if follow else to_fake(x) if isinstance(x, Tensor) else x, out)

    def __reduce_ex__(self, proto):
        """torch.save writes the data as a plain tensor whose storage's location tag is cuda:0 (see tag)."""
        plain = to_plain(self)
        saving.add(plain.untyped_storage().data_ptr())
        return plain.__reduce_ex__(proto)


def backward(func, args, kwargs):
    """Backward on the plain tensors, with device checks off (the engine's gradients are plain here) and the
    subclass on, so that gradient checkpointing's recompute computes fakes from the fakes it saved."""
    _state["backward"] += 1
    try:
        args, kwargs = tree_map(to_plain, (args, kwargs))
        return func(*args, **kwargs)
    finally:
        _state["backward"] -= 1


class FakeCudaMode(TorchFunctionMode):
    """device="cuda" -> a fake; .to/.cuda/.cpu -> move. Everything else runs as it is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (Tensor.to, Tensor.cuda, Tensor.cpu):
            return move(func, args, kwargs)
        device = kwargs.get("device")
        if device is None or func is torch._C._nn._parse_to:  # Module.to parses its device with it: leave it be
            return func(*args, **kwargs)
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        out = func(*args, **dict(kwargs, device="cpu"))
        return tree_map(to_fake if device.type == "cuda" else to_plain, out)


@contextlib.contextmanager
def fake_cuda():
    """Install the fake device (see the module docstring) for the duration of the block; counters start at 0."""
    syncs.clear()
    cuda_loads.clear()
    sdpa_calls.clear()
    compiles.clear()
    real_save, real_is_enabled, real_dtype = torch.save, torch.is_autocast_enabled, torch.get_autocast_dtype
    real_compile, real_mark = torch.compile, torch.compiler.cudagraph_mark_step_begin

    def save(obj, f, *a, **k):
        saving.clear()
        try:
            return real_save(obj, f, *a, **k)
        finally:
            saving.clear()

    def on_cpu(fn):  # autocast queries about "cuda" answer for the CPU autocast that stands in for it
        return lambda device_type="cuda", *a: fn("cpu" if str(device_type).startswith("cuda") else device_type, *a)

    stubs = dict(
        is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0, set_device=lambda d: None,
        synchronize=lambda device=None: None, empty_cache=lambda: None, is_bf16_supported=lambda *a, **k: True,
        mem_get_info=lambda device=None: (MEMORY, MEMORY), memory_allocated=lambda device=None: 0,
        max_memory_allocated=lambda device=None: 0, memory_reserved=lambda device=None: 0,
        max_memory_reserved=lambda device=None: 0, reset_peak_memory_stats=lambda device=None: None,
        get_device_name=lambda device=None: "fake cuda (CPU data)",
        get_device_properties=lambda device=None: types.SimpleNamespace(
            name="fake cuda (CPU data)", total_memory=MEMORY, major=9, minor=0, multi_processor_count=1))
    saved = {k: getattr(torch.cuda, k) for k in stubs}
    package = (5, tag, restore)  # before the built-in cpu (10) and cuda (20) entries
    swap = torch.__future__.get_swap_module_params_on_conversion()
    checks = torch.utils.checkpoint._allowed_determinism_checks_to_fns
    real_meta = checks["default"]
    try:
        checks["default"] = lambda x: dict(shape=x.shape, dtype=x.dtype)
        for k, v in stubs.items():
            setattr(torch.cuda, k, v)
        torch.save = save
        torch.compile, torch.compiler.cudagraph_mark_step_begin = fake_compile, lambda: None
        torch.autocast = torch.amp.autocast = CudaAutocast
        torch.is_autocast_enabled, torch.get_autocast_dtype = on_cpu(real_is_enabled), on_cpu(real_dtype)
        torch.serialization._package_registry.append(package)
        torch.serialization._package_registry.sort(key=lambda p: p[0])
        torch.__future__.set_swap_module_params_on_conversion(True)
        _foreach_supported_types.append(FakeCudaTensor)  # AdamW and clip_grad_norm_ take CUDA's foreach path
        with FakeCudaMode():
            yield
    finally:
        if FakeCudaTensor in _foreach_supported_types:
            _foreach_supported_types.remove(FakeCudaTensor)
        checks["default"] = real_meta
        torch.__future__.set_swap_module_params_on_conversion(swap)
        torch.serialization._package_registry.remove(package)
        torch.is_autocast_enabled, torch.get_autocast_dtype = real_is_enabled, real_dtype
        torch.autocast = torch.amp.autocast = torch.amp.autocast_mode.autocast
        torch.compile, torch.compiler.cudagraph_mark_step_begin = real_compile, real_mark
        torch.save = real_save
        for k, v in saved.items():
            setattr(torch.cuda, k, v)
