"""The decode step of the Qwen3-VL text model, written for one new token per row.

transformers' forward is general: every step it builds a causal mask over the whole static cache,
computes M-RoPE for three position rows, expands the grouped K/V heads to all query heads
(`repeat_kv` copies the whole cache of every layer, every token) and runs RMSNorm as six separate
kernels. For a token after a 12,500-token video prompt that copying alone moves several times the
weights' bytes. This step does the same arithmetic with less traffic and fewer kernels:

- query heads are grouped under their K/V head (`(B * kv_heads, group, head_dim)`), so attention
  reads each cached K/V once, with no expansion;
- the three M-RoPE rows of a decoded token are equal (text position + the prompt's rope delta), so
  the model's own rotary module is called once per step and shared by all layers;
- q/k/v and gate/up projections run as one matrix each: their weights are moved into one buffer
  and the original modules keep views into it (no extra memory; the prefill path is unchanged);
- residual adds are accumulated in place by the o_proj / down_proj matrix products;
- on CUDA with bf16/fp16 (`kernels == "triton"`), the small per-token work runs in VLScope's Triton kernels
  (`core.vlm.decode_kernels`): RMSNorm, one kernel from the q/k/v projection to the cache (q/k norm, rotary,
  cache writes), split-KV attention, and silu(gate) * up: 12 kernels per layer instead of about 22. Elsewhere
  (`kernels == "torch"`) the same steps run as PyTorch operations, q_norm and k_norm as one normalisation.

The model's modules (embedding, norms' weights, o_proj, down_proj, lm_head, activation) are used as
they are, so bitsandbytes-quantised linears work too (they are simply not fused). Prefill and
anything longer than one token still go through transformers. Greedy output equals the plain path
on the tiny model (tests/vlm/test_lean_step.py).
"""

from __future__ import annotations

from typing import Any

from core.vlm.decode_kernels import (GROUP_PAD, decode_attention, prepare_attention, register_ops, rms_norm,
                                    silu_mul, unavailable_reason)


def unsupported_reason(model: Any) -> str | None:
    """Why this step cannot run `model` (None when it can)."""
    try:
        lm = model.model.language_model
        layers = lm.layers
        model.lm_head  # noqa: B018 - presence check
    except AttributeError:
        return "not a Qwen3-VL model (no model.language_model.layers / lm_head)"
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
            if not hasattr(attn, name):
                return f"attention without {name}"
        if not all(hasattr(layer, n) for n in ("input_layernorm", "post_attention_layernorm", "mlp")):
            return "decoder layer without the expected norms / mlp"
    return None


def _fuse_rows(linears: list[Any]) -> Any | None:
    """One weight (sum of rows, in) for several bias-free nn.Linear of one input; the modules keep views.

    Returns None (nothing changed) for quantised or biased layers or mixed dtypes/devices.
    """
    import torch
    from torch import nn

    if any(type(m) is not nn.Linear or m.bias is not None for m in linears):
        return None
    weights = [m.weight for m in linears]
    if len({(w.dtype, w.device, w.shape[1]) for w in weights}) != 1:
        return None
    views = getattr(linears[0], "_vlscope_fused", None)
    if views is not None:  # fused by an earlier decoder of the same model
        return views
    with torch.no_grad():
        fused = torch.cat([w.detach() for w in weights], dim=0)
        start = 0
        for m, w in zip(linears, weights):
            rows = w.shape[0]
            m.weight.data = fused[start:start + rows]
            start += rows
    for m in linears:
        m._vlscope_fused = fused
    return fused


class LeanDecodeStep:
    """Logits after feeding one token per row, reading and writing a transformers StaticCache in place.

    `kernels` is the `decode_kernels` setting: "auto" (the Triton kernels where they apply), "torch" or "triton".
    """

    def __init__(self, model: Any, fuse: bool = True, kernels: str = "auto") -> None:
        import torch

        reason = unsupported_reason(model)
        if reason:
            raise ValueError(reason)
        lm = model.model.language_model
        cfg = lm.config
        self.embed = lm.embed_tokens
        self.rotary = lm.rotary_emb
        self.norm = lm.norm
        self.lm_head = model.lm_head
        self.layers = list(lm.layers)
        first = self.layers[0].self_attn
        self.head_dim = int(getattr(first, "head_dim", cfg.hidden_size // cfg.num_attention_heads))
        self.q_heads = int(cfg.num_attention_heads)
        self.kv_heads = int(cfg.num_key_value_heads)
        self.group = self.q_heads // self.kv_heads
        self.scale = float(getattr(first, "scaling", self.head_dim ** -0.5))
        self.qkv: list[Any] = []
        self.gate_up: list[Any] = []
        self.qk_norm_weight: list[Any] = []
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.qkv.append(_fuse_rows([attn.q_proj, attn.k_proj, attn.v_proj]) if fuse else None)
            has_gate_up = all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn"))
            self.gate_up.append(_fuse_rows([mlp.gate_proj, mlp.up_proj]) if fuse and has_gate_up else None)
            # q_norm and k_norm as one normalisation: per-head weights side by side, (q_heads + kv_heads, head_dim)
            same_eps = _eps(attn.q_norm) == _eps(attn.k_norm)
            self.qk_norm_weight.append(
                torch.cat([attn.q_norm.weight.detach().expand(self.q_heads, -1),
                           attn.k_norm.weight.detach().expand(self.kv_heads, -1)], dim=0)
                if same_eps else None)
        self._positions: dict[tuple[int, str], Any] = {}
        experts = [layer.mlp.experts for layer in self.layers if hasattr(layer.mlp, "experts")]
        self.experts: str | None = None
        """Mixture-of-experts layers (Qwen3-VL MoE): their router and experts run as the model's own module (what
        implementation transformers chose for them, e.g. grouped_mm); None for a dense model."""
        if experts:
            impl = getattr(getattr(experts[0], "config", None), "_experts_implementation", None) or "eager"
            self.experts = f"{len(experts)} MoE layers through transformers' {impl} experts"
        # "triton": core.vlm.decode_kernels (attention split over the cache, one kernel from q/k/v to the cache,
        # silu * up); "torch": PyTorch operations and matrix products (any device)
        weight = self.embed.weight
        self.kernels_fallback = unavailable_reason(weight.device, weight.dtype, kernels)
        d = self.head_dim
        if self.kernels_fallback is None and (self.group > GROUP_PAD or d < 16 or d & (d - 1)):
            self.kernels_fallback = f"{self.group} query heads per K/V head, head_dim {d} (kernels: <= 16, 2^n >= 16)"
        self.kernels = "triton" if self.kernels_fallback is None else "torch"
        # the one-kernel q/k/v preparation needs the fused projection and one norm weight per q / k
        self.prepare = [self.kernels == "triton" and self.qkv[i] is not None and self.qk_norm_weight[i] is not None
                        for i in range(len(self.layers))]
        self.gated = [self.kernels == "triton" and self.gate_up[i] is not None and _is_silu(layer.mlp.act_fn)
                      for i, layer in enumerate(self.layers)]
        self.triton_norm = self.kernels == "triton"
        if self.kernels == "triton":
            register_ops()  # outside any compiled code: torch.compile then sees opaque ops

    def _arange(self, length: int, device: Any) -> Any:
        import torch

        key = (length, str(device))
        if key not in self._positions:
            self._positions[key] = torch.arange(length, device=device)
        return self._positions[key]

    def __call__(self, tokens: Any, cache_position: Any, rope_deltas: Any, cache_layers: list[Any],
                 valid: Any | None = None) -> Any:
        """`tokens` (B, 1) at cache index `cache_position` (1,); `rope_deltas` (B, 1); `valid` (B, L) or None."""
        import torch

        batch = tokens.shape[0]
        x = self.embed(tokens)  # (B, 1, hidden)
        device, dtype = x.device, x.dtype
        hq, hkv, d, g = self.q_heads, self.kv_heads, self.head_dim, self.group
        positions = (cache_position.view(1, 1) + rope_deltas.view(-1, 1)).expand(batch, 1)
        cos_raw, sin_raw = self.rotary(x, positions.unsqueeze(0).expand(3, batch, 1))  # (B, 1, head_dim), all layers
        cos = sin = None
        if not all(self.prepare):
            cos = cos_raw.unsqueeze(2)  # (B, 1, 1, head_dim): shared by all heads and layers
            half = d // 2
            # rotate_half(x) * sin == flip(halves of x) * (sin with its first half negated)
            sin = torch.cat([-sin_raw[..., :half], sin_raw[..., half:]], dim=-1).unsqueeze(2)
        length = cache_layers[0].keys.shape[2]
        allowed = self._arange(length, device) <= cache_position
        if valid is not None:
            allowed = allowed & (valid != 0)
        bias_rows = torch.zeros(allowed.shape, dtype=torch.float32, device=device).masked_fill_(~allowed, float("-inf"))
        triton = self.kernels == "triton"
        if not triton:  # (B * kv_heads, group, L): the additive mask of every grouped query row
            bias = bias_rows.view(-1, 1, 1, length).expand(batch, hkv, g, length).reshape(batch * hkv, g, length)
        # float32 products of bf16/fp16 operands (cuBLAS `out_dtype`); under torch.compile (which cannot trace
        # `out_dtype` in torch 2.11) the products are rounded to the model's dtype first, like eager attention
        wide = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and not torch.compiler.is_compiling()
        chunks = length // self.chunk if length >= 8 * self.chunk and length % self.chunk == 0 else 1
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = self._norm(x, layer.input_layernorm)
            cache = cache_layers[i]
            keys, values = cache.keys, cache.values  # (B, kv_heads, L, head_dim)
            if self.prepare[i]:  # norm, rotary and cache writes in one kernel
                qkv = torch.nn.functional.linear(h, self.qkv[i]).view(batch, 1, hq + 2 * hkv, d)
                q = prepare_attention(qkv, attn.q_norm.weight, attn.k_norm.weight, cos_raw, sin_raw, cache_position,
                                      keys, values, hq, _eps(attn.q_norm)).view(batch * hkv, g, d)
            else:
                q = self._prepare_torch(h, attn, i, batch, cos, sin, cache_position, keys, values)
            if triton:
                out = decode_attention(q, keys.view(batch * hkv, length, d), values.view(batch * hkv, length, d),
                                       bias_rows, cache_position, self.scale)
                x = _linear_add(x, attn.o_proj, out.view(batch, 1, hq * d))
            else:
                x = _linear_add(x, attn.o_proj, self._attention_products(
                    q, keys, values, bias, batch * hkv, g, length, chunks, wide, dtype).view(batch, 1, hq * d))
            h = self._norm(x, layer.post_attention_layernorm)
            mlp = layer.mlp
            if self.gated[i]:
                x = _linear_add(x, mlp.down_proj, silu_mul(torch.nn.functional.linear(h, self.gate_up[i])))
            elif self.gate_up[i] is not None:
                gate, up = torch.nn.functional.linear(h, self.gate_up[i]).chunk(2, dim=-1)
                x = _linear_add(x, mlp.down_proj, mlp.act_fn(gate) * up)
            else:
                x = x + mlp(h)
        x = self._norm(x, self.norm)
        return self.lm_head(x)[:, -1, :]

    def _norm(self, x: Any, norm: Any) -> Any:
        """The hidden state's RMSNorm: the Triton kernel with the Triton kernels, else one PyTorch kernel."""
        if self.triton_norm:
            return rms_norm(x, norm.weight, _eps(norm))
        return _rms(x, norm)

    def _prepare_torch(self, h: Any, attn: Any, i: int, batch: int, cos: Any, sin: Any, cache_position: Any,
                       keys: Any, values: Any) -> Any:
        """q/k/v projection, q/k norm, rotary and cache writes in PyTorch -> queries (B * kv_heads, group, head_dim)."""
        import torch

        hq, hkv, d, g = self.q_heads, self.kv_heads, self.head_dim, self.group
        if self.qkv[i] is not None:
            qkv = torch.nn.functional.linear(h, self.qkv[i])
        else:
            qkv = torch.cat([attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)], dim=-1)
        qkv = qkv.view(batch, 1, hq + 2 * hkv, d)
        if self.qk_norm_weight[i] is not None:
            qk = torch.nn.functional.rms_norm(qkv[:, :, :hq + hkv], (d,), eps=_eps(attn.q_norm))
            qk = qk * self.qk_norm_weight[i]
        else:
            qk = torch.cat([_rms(qkv[:, :, :hq], attn.q_norm), _rms(qkv[:, :, hq:hq + hkv], attn.k_norm)], dim=2)
        half = d // 2
        flipped = qk.view(batch, 1, hq + hkv, 2, half).flip(3).view(batch, 1, hq + hkv, d)
        qk = torch.addcmul(qk * cos, flipped, sin)
        keys.index_copy_(2, cache_position, qk[:, :, hq:].transpose(1, 2))
        values.index_copy_(2, cache_position, qkv[:, :, hq + hkv:].transpose(1, 2))
        return qk[:, :, :hq].reshape(batch * hkv, g, d)  # query heads grouped under their K/V head

    def _attention_products(self, q: Any, keys: Any, values: Any, bias: Any, heads: int, g: int, length: int,
                            chunks: int, wide: bool, dtype: Any) -> Any:
        """The portable attention: scores, softmax and weighted values as matrix products -> (heads, g, head_dim)."""
        import torch

        d = q.shape[-1]
        k_t = keys.view(heads, length, d).transpose(1, 2)
        if wide:
            scores = torch.baddbmm(bias, q, k_t, out_dtype=torch.float32, alpha=self.scale)
        elif dtype == torch.float32:
            scores = torch.baddbmm(bias, q, k_t, alpha=self.scale)
        else:
            scores = torch.bmm(q, k_t).float().mul_(self.scale).add_(bias)
        probs = torch.softmax(scores, dim=-1)
        return self._weighted_values(probs, values, heads, g, length, chunks, wide, dtype)

    chunk = 256
    """From 8 chunks of this many cached tokens, probs @ V runs as one small product per chunk, summed after:
    one (group x L) @ (L x head_dim) product per head leaves most of the GPU idle (split-K by hand)."""

    @staticmethod
    def _weighted_values(probs: Any, values: Any, heads: int, g: int, length: int, chunks: int, wide: bool,
                         dtype: Any) -> Any:
        """(heads, g, L) probabilities times the cached values (B, kv_heads, L, head_dim) -> (heads, g, head_dim)."""
        import torch

        d = values.shape[-1]
        if chunks == 1:
            return torch.bmm(probs.to(dtype), values.view(heads, length, d))
        size = length // chunks
        parts_p = torch.empty((heads, chunks, g, size), dtype=dtype, device=probs.device)
        parts_p.copy_(probs.view(heads, g, chunks, size).transpose(1, 2))
        parts_p = parts_p.view(heads * chunks, g, size)
        parts_v = values.view(heads * chunks, size, d)
        if wide:
            partial = torch.bmm(parts_p, parts_v, out_dtype=torch.float32)
        else:
            partial = torch.bmm(parts_p, parts_v).float()
        return partial.view(heads, chunks, g, d).sum(1).to(dtype)


def _linear_add(residual: Any, linear: Any, x: Any) -> Any:
    """residual + linear(x), as one GEMM accumulating into the residual where the layer is a plain nn.Linear.

    The residual is the step's own hidden state (a fresh tensor from the embedding), so updating it in place is safe."""
    from torch import nn

    if type(linear) is nn.Linear and linear.bias is None and residual.is_contiguous():
        # in place: the product accumulates into the residual's own memory (an out-of-place addmm first copies it)
        residual.view(-1, residual.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), linear.weight.t())
        return residual
    return residual + linear(x)


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def _rms(x: Any, norm: Any) -> Any:
    """RMSNorm as one kernel (the weight is applied before the cast back, transformers applies it after)."""
    import torch

    return torch.nn.functional.rms_norm(x, (x.shape[-1],), norm.weight, eps=_eps(norm))


def _is_silu(act: Any) -> bool:
    """The activation is SiLU (nn.SiLU or transformers' own SiLU module)."""
    from torch import nn

    return isinstance(act, nn.SiLU) or type(act).__name__ in ("SiLUActivation", "SiLU")
