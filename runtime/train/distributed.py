"""Data parallelism for the nested loop: replicas (ddp) or sharded parameters (fsdp) over torch.distributed.

A run started by torchrun (or `nlc train --nproc N`, which starts torchrun) has WORLD_SIZE > 1 in its
environment; every process then builds a `DataParallel`, the others use `Single`, which does nothing.
Both offer what the loop, the trainer and the checkpoints need, so that those never test the mode:

- the data: each rank reads a disjoint, contiguous block of rows of the global batch (`rows`), so a
  run over N processes with global batch B reads exactly what one process with batch B reads;
- the gradients, before EVERY optimizer step (`reduce_grads(params, kind)`): a CMS window's gradient is
  a sum over all rows of all ranks (kind "sum", semantics §3); the outer level's gradient, which each
  rank has divided by its own tokens, is averaged over the ranks (kind "mean"), which is the mean over
  all tokens since every rank holds as many;
- global scalars: loss sums, token counts, memory norms, agreement on finiteness (`sum`, `all`);
- checkpoints: full (unsharded) tensors, memory states of all rows, open-window gradients in their
  global value, so a run resumes under any number of processes.

ddp keeps a whole model per rank and reduces gradients itself (one flat all-reduce per level step)
instead of wrapping torch's DistributedDataParallel: that reduces after every backward (one per
segment), always averages and needs find_unused_parameters for memory initial states; here each
level gets exactly the reduction its semantics ask for. fsdp shards every parameter with FSDP2
(`fully_shard` per block, then the root); FSDP reduce-scatters after each backward with a divide
factor of 1, i.e. sums, and the rest follows. Optimizers that look at a whole matrix or tensor (muon
and m3 with Newton–Schulz, deep_momentum with its per-tensor scale) cannot step on shards: refused; so
is `bptt full`, which runs the model with copies of its CMS weights in place of the parameters.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

import torch
from torch import nn

NOT_ELEMENTWISE = {
    "muon": "orthogonalises whole matrices (Newton–Schulz)",
    "m3": "orthogonalises whole matrices (Newton–Schulz)",
    "deep_momentum": "scales and samples each whole gradient tensor",
}


class ParallelError(ValueError):
    """A run that cannot be split as asked (batch not divisible, an optimizer that cannot shard, ...)."""


class PeerFailed(RuntimeError):
    """Another rank failed while this one waited for it (that rank reports the reason)."""


class Single:
    """One process: every collective is the identity."""

    rank, world, is_main, sharded = 0, 1, True, False

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)

    # ------------------------------------------------------------------ setup
    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def check_levels(self, info: dict) -> None:
        pass

    def shard_stream(self, stream):
        return stream

    def rows(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def close(self, together: bool = True) -> None:
        pass

    # ------------------------------------------------------------------ the loop
    def reduce_grads(self, params, kind: str) -> None:
        pass

    def sum(self, values: list) -> list:
        return [float(v) for v in values]

    def all(self, flag: bool) -> bool:
        return bool(flag)

    # ------------------------------------------------------------------ checkpoints
    def full(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def global_grads(self, named_params, kinds: dict) -> dict:
        return {n: p.grad.detach() for n, p in named_params if p.grad is not None}

    def local_grad(self, param, full: torch.Tensor, kind: str) -> torch.Tensor:
        return full.to(device=param.device).clone()

    def load_model(self, model: nn.Module, state: dict) -> None:
        model.load_state_dict(state)

    def optimizer_state(self, opt, state: dict) -> dict:
        return state


def from_env(parallel: str, device: str) -> Single:
    """`DataParallel` under torchrun with several processes (or an initialised group), else `Single`."""
    import torch.distributed as dist

    if parallel not in ("ddp", "fsdp"):
        raise ParallelError(f"unknown --parallel {parallel!r}; choose ddp or fsdp")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    initialised = dist.is_available() and dist.is_initialized()
    if world <= 1 and not initialised:
        return Single(device)
    return DataParallel(parallel, device)


class DataParallel(Single):
    def __init__(self, parallel: str, device: str):
        import torch.distributed as dist

        self.dist = dist
        dev = torch.device(device)
        if dev.type == "cuda":
            if dev.index is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ParallelError(f"--device {device} names one GPU for every process; give --device cuda, "
                                    "and each process takes the GPU of its local rank")
            if dev.index is None:  # one device per process: torchrun's LOCAL_RANK picks it
                dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
            backend = "nccl"
        elif dev.type == "cpu":
            backend = "gloo"
        else:
            raise ParallelError(f"data parallelism runs on cpu (gloo) or cuda (nccl) devices, not {device!r}")
        self.device = dev
        self.owns_group = not dist.is_initialized()
        if self.owns_group:
            dist.init_process_group(backend)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.sharded = parallel == "fsdp"
        self.mesh = None

    # ------------------------------------------------------------------ setup
    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.sharded:
            with torch.no_grad():  # the same seed gives the same model; rank 0's makes sure of it
                for t in list(model.parameters()) + list(model.buffers()):
                    self.dist.broadcast(t.detach(), src=0)
            return model
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
        except ImportError as e:  # pragma: no cover - old torch
            raise ParallelError(f"--parallel fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard): {e}") from e
        self.mesh = init_device_mesh(self.device.type, (self.world,))
        units = _units(model)
        for unit in units:
            fully_shard(unit, mesh=self.mesh)
            # before FSDP's own pre-forward hook, which rebuilds dict arguments (it re-wraps the tensors
            # that need gradients): a block writes its new memory states into the caller's dict
            unit.register_forward_pre_hook(_state_by_reference, prepend=True, with_kwargs=True)
        fully_shard(model, mesh=self.mesh)
        for module in [*units, model]:
            module.set_gradient_divide_factor(1.0)  # reduce-scatter sums: the window gradient is a sum
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
        return model

    def check_levels(self, info: dict) -> None:
        if not self.sharded:
            return
        if info["outer"]["bptt"] == "full":
            raise ParallelError(
                "--parallel fsdp: `bptt full` runs the model with values in place of its CMS parameters for a "
                "whole step, which sharded parameters cannot take; use --parallel ddp")
        levels = [(info["outer"]["name"], info["outer"]["optimizer"]["kind"])]
        levels += [(lv["name"], lv["optimizer"]["kind"]) for chain in info["cms"] for lv in chain["levels"]
                   if lv["unit"] == "tokens"]
        for name, kind in levels:
            if kind in NOT_ELEMENTWISE:
                raise ParallelError(
                    f"--parallel fsdp: level `{name}` steps with `{kind}`, which {NOT_ELEMENTWISE[kind]} and cannot "
                    f"step on sharded parameters; use --parallel ddp, or an elementwise optimizer (sgd, momentum, "
                    f"adamw) for that level")

    def shard_stream(self, stream):
        return RowShard(stream, self)

    def rows(self, batch: torch.Tensor) -> torch.Tensor:
        n = batch.shape[0]
        if n % self.world:
            raise ParallelError(f"a batch of {n} rows does not split over {self.world} processes: "
                                f"use a --batch that is a multiple of {self.world}")
        k = n // self.world
        return batch[self.rank * k:(self.rank + 1) * k]

    def close(self, together: bool = True) -> None:
        """Leave the process group; `together`: first wait for every rank (all must call it then)."""
        if self.owns_group and self.dist.is_initialized():
            if together:  # nobody leaves (or is stopped by torchrun) while rank 0 still writes the run
                self.dist.barrier()
            self.dist.destroy_process_group()

    # ------------------------------------------------------------------ the loop
    def reduce_grads(self, params, kind: str) -> None:
        params = list(params)
        if self.sharded:  # FSDP has summed already (after each backward)
            if kind == "mean":
                for p in params:
                    if p.grad is not None:
                        p.grad.div_(self.world)
            return
        by_dtype: dict = {}
        for p in params:
            by_dtype.setdefault(p.dtype, []).append(p)
        for dtype, group in by_dtype.items():
            # one all-reduce per dtype: the gradients (zeros where a rank has none) and, at the end, how
            # many ranks have one; a gradient on any rank makes one on all, as a single process would
            wire = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
            parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(wire) for p in group]
            parts.append(torch.tensor([p.grad is not None for p in group], dtype=wire, device=self.device))
            flat = torch.cat(parts)
            self.dist.all_reduce(flat)
            have = flat[-len(group):].tolist()
            if kind == "mean":
                flat.div_(self.world)
            offset = 0
            for p, h in zip(group, have):
                g = flat[offset:offset + p.numel()].view_as(p).to(dtype)
                offset += p.numel()
                if not h:
                    continue
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)

    def sum(self, values: list) -> list:
        if not values:
            return []
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return t.tolist()

    def all(self, flag: bool) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN)
        return bool(t.item())

    # ------------------------------------------------------------------ checkpoints
    def full(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.full_tensor() if _is_dtensor(tensor) else tensor

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 0:
            return tensor
        tensor = tensor.detach().contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        self.dist.all_gather(parts, tensor)
        return torch.cat(parts)

    def global_grads(self, named_params, kinds: dict) -> dict:
        named = list(named_params)
        have = torch.tensor([p.grad is not None for _, p in named], dtype=torch.int32, device=self.device)
        self.dist.all_reduce(have)
        out = {}
        for (name, p), h in zip(named, have.tolist()):
            if not h:
                continue
            g = (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
            if self.sharded:
                g = g.full_tensor()
            else:
                g = g.clone()
                self.dist.all_reduce(g)
            if kinds[name] == "mean":
                g = g / self.world
            out[name] = g
        return out

    def local_grad(self, param, full: torch.Tensor, kind: str) -> torch.Tensor:
        full = full.to(device=self.device, dtype=param.dtype)
        if self.sharded:  # what FSDP holds: the sum over ranks (for the outer level, of per-rank means)
            return self._like(param, full * self.world if kind == "mean" else full)
        if kind == "sum" and not self.is_main:  # the other ranks' shares of the sum are zero
            return torch.zeros_like(full)
        return full.clone()

    def load_model(self, model: nn.Module, state: dict) -> None:
        if not self.sharded:
            model.load_state_dict(state)
            return
        own = model.state_dict(keep_vars=True)
        if set(own) != set(state):
            missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise RuntimeError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for key, target in own.items():
                target.copy_(self._like(target, state[key].to(device=self.device, dtype=target.dtype)))

    def optimizer_state(self, opt, state: dict) -> dict:
        if not self.sharded:
            return state
        params = [p for group in opt.param_groups for p in group["params"]]
        for idx, slots in state["state"].items():
            p = params[int(idx)]
            for key, value in slots.items():
                if isinstance(value, torch.Tensor) and value.dim() and tuple(value.shape) == tuple(p.shape):
                    slots[key] = self._like(p, value.to(device=self.device))
        return state

    def _like(self, target, full: torch.Tensor):
        """`full` laid out as `target` (a DTensor: each rank keeps its own shard, no communication)."""
        if not _is_dtensor(target):
            return full
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None)


class RowShard:
    """The rows of a global batch stream that one rank reads; its position is the global stream's."""

    def __init__(self, stream, comm: DataParallel):
        self.stream, self.comm = stream, comm
        comm.rows(torch.empty(stream.batch, 0))  # the batch must split: fail now, not at the first step

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        return self.comm.rows(next(self.stream))

    @property
    def last_targets(self):
        """The global batch's targets that count (None: all of them), as the stream says."""
        return self.stream.last_targets

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


class _StateView(MutableMapping):
    """The caller's state dict, seen through an object FSDP does not take apart and rebuild."""

    def __init__(self, state: dict):
        self.state = state

    def __getitem__(self, key):
        return self.state[key]

    def __setitem__(self, key, value):
        self.state[key] = value

    def __delitem__(self, key):
        del self.state[key]

    def __iter__(self):
        return iter(self.state)

    def __len__(self):
        return len(self.state)


def _state_by_reference(module, args, kwargs):
    def view(a):
        return _StateView(a) if isinstance(a, dict) else a

    return tuple(view(a) for a in args), {k: view(v) for k, v in kwargs.items()}


def _is_dtensor(t) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed support
        return False
    return isinstance(t, DTensor)


def _units(model: nn.Module) -> list:
    """The modules FSDP shards on their own: every block, CMS chain and layer of a stack.

    Embeddings and norms stay with the root: the tied output head reads the embedding's weight
    outside the embedding's own forward, where a separately sharded weight would not be gathered.
    """
    from nldsl.runtime import Embedding, LayerNorm, RMSNorm

    small = (Embedding, RMSNorm, LayerNorm, nn.Embedding, nn.LayerNorm)
    units = []
    for child in model.children():
        for module in (child if isinstance(child, nn.ModuleList) else [child]):
            if not isinstance(module, small) and any(True for _ in module.parameters()):
                units.append(module)
    return units
