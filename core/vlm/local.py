"""The local engine: Qwen3-VL through Hugging Face transformers on this machine's GPU or CPU.

`LocalEngine` wires the parts together: `core.vlm.loading` loads the model, `core.vlm.runner` does the device
work, `core.vlm.scheduler` decides who gets the model when (and batches compatible requests), and
`core.vlm.prefix` keeps videos' prefix KV caches for follow-up questions.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from core.settings import Settings
from core.vlm.base import Engine, EngineError, EngineInfo, Ledger, RequestRecord, TextStream
from core.vlm.loading import (
    dtype_name,
    load_model,
    pick_attention,
    pick_device,
    pick_dtype,
    quantization_config,
    resolve_model,
)
from core.vlm.featurestore import FeatureMemory, FeatureStore, feature_material
from core.vlm.loading import sized_store
from core.vlm.prefix import PrefixReport, PrefixStore
from core.vlm.prefixstream import stream_prefix
from core.vlm.runner import PresencePenalty, Runner, fast_decode_wanted
from core.vlm.scheduler import Request, RequestStatus, Scheduler
from core.vlm.suffix_attention import warm as warm_suffix_attention
from core.vlm.types import GenerationParams, GenerationResult, Message, Metrics, split_reasoning

__all__ = [
    "LocalEngine",
    "PrefixStore",
    "PresencePenalty",
    "dtype_name",
    "pick_attention",
    "pick_device",
    "pick_dtype",
    "quantization_config",
    "resolve_model",
]

log = logging.getLogger(__name__)


class LocalEngine(Engine):
    """Runs Qwen3-VL with transformers. Load lazily with `load()`; requests take turns on the model (compatible
    ones decode as one batch on the fast path)."""

    def __init__(self, settings: Settings, feature_store: FeatureStore | None = None) -> None:
        self.settings = settings
        self.feature_store = feature_store
        """Where videos' visual features are kept (the result cache); None: they are encoded for every request."""
        self.ledger = Ledger()
        self.prefixes = PrefixStore(0)  # sized from the memory free once the model is loaded
        self.load_seconds: float | None = None
        self._runner: Runner | None = None
        self._device = ""
        self._dtype: Any = None
        self._attn = ""
        self._quant = settings.quantization
        self._error: str | None = None
        self._load_lock = threading.Lock()
        self._scheduler = Scheduler(settings, self._run)

    # -- loading ------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._runner is not None

    @property
    def runner(self) -> Runner:
        """The device side of the engine (loads the model first)."""
        self.load()
        assert self._runner is not None
        return self._runner

    @property
    def model(self) -> Any:
        return self.runner.model

    @property
    def processor(self) -> Any:
        return self.runner.processor

    @property
    def generation_lock(self) -> threading.Lock:
        """Held while the model runs; hold it to use the model directly (e.g. cache reuse)."""
        return self._scheduler.lock

    def load(self) -> None:
        """Load weights and processor once; raises ModelUnavailable or EngineError with the fix."""
        if self._runner is not None:
            return
        with self._load_lock:
            if self._runner is not None:
                return
            try:
                self._load()
                self._error = None
            except EngineError as exc:
                self._error = str(exc)
                raise

    def _load(self) -> None:
        started = time.perf_counter()
        loaded = load_model(self.settings)
        self._device, self._dtype, self._attn, self._quant = loaded.device, loaded.dtype, loaded.attn, loaded.quantization
        self.prefixes = sized_store(self.settings, loaded.device, loaded.model)  # from the memory the weights left
        if self.prefixes.disk is not None:
            self.prefixes.disk.gpu_gate = self._scheduler.lock  # its copies never run beside the model (graph capture)
            self.prefixes.disk.prepare(loaded.device)  # its pinned staging buffers, made now rather than on a restart
        runner = Runner(self.settings, loaded, self.prefixes)
        runner.features = self._memory(runner, loaded.quantization)
        if runner.fast_enabled:
            runner.fast_decoder()  # set up now (under the load lock), so the first request and info() find it
            warm_suffix_attention(runner.model)  # the kernels a question's own words attend with, loaded now
        self._runner = runner
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s on %s (%s, %s) in %.1fs", loaded.path, self._device, dtype_name(self._dtype), self._attn,
                 self.load_seconds)

    def set_feature_store(self, store: FeatureStore | None) -> None:
        """Keep videos' visual features in `store` (e.g. the runtime's result cache): a video with a `cache_key`
        is encoded once, and later questions in any process prefill the language model from its features."""
        with self._load_lock:
            self.feature_store = store
            if self._runner is not None:
                self._runner.features = self._memory(self._runner, self._quant)

    def _memory(self, runner: Runner, quantization: str) -> FeatureMemory | None:
        if self.feature_store is None:
            return None
        material = feature_material(self.settings.model, dtype_name(runner.dtype), quantization)
        memory = FeatureMemory(self.feature_store, material, runner.model, runner.processor, self._scheduler.lock)
        memory.chunk_tokens = self.settings.prefill_chunk_tokens
        # an ingest told its prompt prefills the kept prefix as the parts come (core.vlm.prefixstream)
        memory.start_prefix = lambda messages, meta: stream_prefix(runner, messages, meta)
        return memory

    @property
    def feature_memory(self) -> FeatureMemory | None:
        """The visual memory (loads the model first), or None without a feature store."""
        return None if self.feature_store is None else self.runner.features

    def info(self) -> EngineInfo:
        return EngineInfo(
            backend="local",
            model=self.settings.model,
            loaded=self.loaded,
            device=self._device,
            dtype=dtype_name(self._dtype) if self._dtype is not None else "",
            quantization=self._quant,
            attn_implementation=self._attn,
            error=self._error,
            decoding=self._decoding() if self.loaded else "",
            architecture=self._runner.architecture.describe() if self._runner is not None else "",
            prefixes=self.prefix_report(),
        )

    def prefix_report(self) -> PrefixReport | None:
        """The kept video prefixes per tier and why the tiers have their sizes; None until the model is loaded."""
        return self.prefixes.report() if self.loaded else None

    def _decoding(self) -> str:
        runner = self._runner
        unsupported = runner.fast_unsupported if runner is not None else None
        if unsupported and self.settings.fast_decode != "off":
            wanted = fast_decode_wanted(self.settings.fast_decode, self._device)
            where = "" if wanted else "; fast decoding is also for CUDA only"
            return f"plain generate ({unsupported}{where})"
        if not self.fast_decode_enabled:
            why = "VLSCOPE_FAST_DECODE=off" if self.settings.fast_decode == "off" else "fast decoding is for CUDA"
            return f"plain generate ({why})"
        fast = self._fast  # read only: info() never builds or changes the decoder
        return "fast: " + (fast.describe() if fast is not None else "set up at the first request")

    @property
    def fast_decode_enabled(self) -> bool:
        """Whether requests decode through the static-cache / CUDA-graph path (the setting, the device and the
        architecture: Qwen3.5's recurrent layers are not in it)."""
        if self._runner is not None and self._runner.fast_unsupported:
            return False
        return fast_decode_wanted(self.settings.fast_decode, self._device)

    @property
    def _fast(self) -> Any:
        """The runner's FastDecoder (None before it is set up); the benchmarks swap decoders through it."""
        return self._runner.fast if self._runner is not None else None

    @_fast.setter
    def _fast(self, decoder: Any) -> None:
        self.runner.fast = decoder

    def close(self) -> None:
        disk = getattr(self.prefixes, "disk", None)
        if disk is not None:
            disk.wait()  # a prefix being written to the disk tier is finished (the next process reads it)
        memory = self._runner.features if self._runner is not None else None
        if memory is not None:
            memory.wait()  # and the visual features an ingest is still storing (the manifest is written last)
        with self._scheduler.lock:
            if self._runner is not None:
                self._runner.fast = None
            self.prefixes.clear()
            self._runner = None
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass

    # -- inputs -------------------------------------------------------------------------
    def build_inputs(self, messages: list[Message]) -> Any:
        """Chat messages -> the processor's tensors (on the model's device), with real video timestamps."""
        return self.runner.build_inputs(messages)

    def count_visual_tokens(self, input_ids: Any) -> int:
        return self.runner.count_visual_tokens(input_ids)

    def decode(self, token_ids: Any) -> str:
        return self.runner.decode(token_ids)

    # -- generation ---------------------------------------------------------------------
    def _run(self, group: list[Request]) -> None:
        runner = self._runner
        if runner is None:  # closed while the requests waited
            for r in group:
                r.error = EngineError("The engine was closed while the request waited; send it again.")
                r.streamer.end()
            return
        runner.run(group)

    def stream(self, messages: list[Message], params: GenerationParams | None = None, kind: str = "chat") -> TextStream:
        """Start answering; a visual input with a `cache_key` keeps its KV cache so follow-ups skip re-encoding."""
        params = params or GenerationParams(max_new_tokens=self.settings.max_new_tokens)
        created = time.perf_counter()
        self.load()
        record = RequestRecord(started_at=time.time(), kind=kind, model=self.settings.model, status="running")
        try:
            request = self.runner.prepare(messages, params, created)
        except EngineError as exc:
            record.status, record.error = "error", str(exc)
            self.ledger.add(record)
            raise
        self._scheduler.submit(request)
        return TextStream(iter(request.streamer), request.cancel.set, lambda: self._result(request, record))

    def _result(self, request: Request, record: RequestRecord) -> GenerationResult:
        """Wait for `request`, then its result (and ledger line); raises its error."""
        request.wait()
        params, prompt_length = request.params, request.prompt_length
        t0, t1, t_end = request.created, request.rendered, request.ended or time.perf_counter()
        t2 = request.started if request.started is not None else t_end
        stats = request.fast_stats
        metrics = Metrics(
            preprocess_ms=(t1 - t0) * 1000,
            queue_ms=(t2 - t1) * 1000,
            visual_tokens=request.visual_tokens,
            reused_prefix_tokens=request.reused_tokens,
            decode_path=("static+graph" if stats.used_graph else "static") if stats is not None else "plain",
            visual_features=getattr(request.prefix.prefix_inputs if request.prefix else None, "origin", ""),
            total_ms=(t_end - t0) * 1000,
            peak_gpu_memory_bytes=request.peak_bytes,
            batch_size=request.batch_size,
        )
        if request.status is RequestStatus.FAILED:
            assert request.error is not None
            record.status, record.error = "error", str(request.error)
            self._fill_record(record, metrics, prompt_length, 0)
            self.ledger.add(record)
            raise request.error
        eos = self.runner.eos_ids()
        ids = [int(t) for t in request.new_ids.tolist()]
        stopped_on_eos = bool(ids) and ids[-1] in eos
        while ids and (ids[-1] in eos):
            ids.pop()
        completion = len(ids) + (1 if stopped_on_eos else 0)
        first_token = request.streamer.first_token
        if first_token is not None:
            metrics.prefill_ms = (first_token - t2) * 1000
            metrics.ttft_ms = (first_token - t0) * 1000
            metrics.decode_ms = (t_end - first_token) * 1000
            if completion > 1 and metrics.decode_ms > 0:
                metrics.decode_tokens_per_s = (completion - 1) / (metrics.decode_ms / 1000)
        if request.cancel.is_set() and not stopped_on_eos and completion < params.max_new_tokens:
            reason = "cancelled"
        elif stopped_on_eos:
            reason = "stop"
        else:
            reason = "length" if completion >= params.max_new_tokens else "stop"
        text, reasoning = split_reasoning(ids, self.runner.think_end, self.decode)
        result = GenerationResult(text=text, prompt_tokens=prompt_length, completion_tokens=completion,
                                  finish_reason=reason, metrics=metrics, model=self.settings.model, reasoning=reasoning)
        record.status = reason
        self._fill_record(record, metrics, prompt_length, completion)
        self.ledger.add(record)
        return result

    @staticmethod
    def _fill_record(record: RequestRecord, m: Metrics, prompt: int, completion: int) -> None:
        record.prompt_tokens, record.completion_tokens = prompt, completion
        record.visual_tokens = m.visual_tokens
        record.preprocess_ms, record.queue_ms = m.preprocess_ms, m.queue_ms
        record.prefill_ms, record.ttft_ms, record.total_ms = m.prefill_ms, m.ttft_ms, m.total_ms
        record.decode_tokens_per_s = m.decode_tokens_per_s
        record.batch_size = m.batch_size
        record.peak_gpu_memory_bytes = m.peak_gpu_memory_bytes
