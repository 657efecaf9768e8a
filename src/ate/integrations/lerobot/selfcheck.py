"""Checks of the ATE LeRobot policies against LeRobot's own, run inside LeRobot's environment (offline).

    python -m ate.integrations.lerobot.selfcheck diffusion --dataset ROOT --vae VAE_DIR [--pretrained CKPT]
    python -m ate.integrations.lerobot.selfcheck pi0|pi05|smolvla --vae VAE_DIR --action-dim 4 --chunk 16

Each prints one JSON object of measured facts (the test tier asserts on them):

- diffusion: with λ = 0 the ATE loss equals LeRobot's DiffusionPolicy loss bit for bit (same weights, same
  seed); with λ > 0 the logged ``ate_plain_loss`` equals that same upstream loss while the optimised loss
  differs; the VAE is in neither ``parameters()`` nor ``state_dict()``; a VAE normalised with other stats
  is refused; ``from_pretrained`` of a plain ``diffusion`` checkpoint loads every weight.
- pi0: LeRobot's real ``PI0Policy`` module with reduced sizes. LeRobot builds pi0 from fixed variants
  (gemma_2b / gemma_300m, SigLIP-So400m, a 2048-wide projector), about 3.3 B parameters, which do not fit a
  2-core CPU test; :func:`tiny_pi0` swaps the Gemma variant table and the PaliGemma vision config for
  small ones (everything else — openpi flow convention, padding to ``max_action_dim``, attention masks,
  the loss — is the real code). Forward + backward, λ = 0 equality with PI0Policy, guidance only on the
  real action dims and off ``action_is_pad`` steps.
- pi05: the same with LeRobot's ``PI05Policy`` (same patch, applied to ``modeling_pi05``).
- smolvla: LeRobot's ``SmolVLAPolicy`` built from a small SmolVLM config (:func:`tiny_smolvla`): upstream
  reads the SmolVLM2 config and processor from the Hub even without its weights.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager

import torch


def _loss(policy, batch, seed):
    torch.manual_seed(seed)
    return policy.forward(batch)


# ---------------------------------------------------------------------------------------------- diffusion
def _diffusion_batch(root: str, cfg, batch_size: int = 8):
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.policies.factory import make_pre_post_processors

    meta = LeRobotDatasetMetadata("local/ate_toy", root=root)
    ds = LeRobotDataset("local/ate_toy", root=root, delta_timestamps=resolve_delta_timestamps(cfg, meta))
    pre, _ = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    items = [ds[i] for i in range(0, len(ds), max(len(ds) // batch_size, 1))][:batch_size]
    items[-1] = ds[len(ds) - 1]  # an end-of-episode window: padded steps present
    batch = torch.utils.data.default_collate(items)
    return pre(batch), meta


def check_diffusion(root: str, vae: str, pretrained: str | None = None) -> dict:
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_policy

    from ate.errors import CheckpointError
    from ate.integrations.lerobot.configuration_ate import AteDiffusionConfig
    from ate.integrations.lerobot.modeling_ate import AteDiffusionPolicy

    common = dict(horizon=16, n_action_steps=8, down_dims=(32, 64), diffusion_step_embed_dim=32, device="cpu")
    ate_cfg = AteDiffusionConfig(**common, vae_path=vae, guidance_scale=2.0)
    batch, meta = _diffusion_batch(root, ate_cfg)
    ate = make_policy(ate_cfg, ds_meta=meta)  # the lerobot-train path: features + dataset_stats
    ate.train()
    plain_cfg = DiffusionConfig(**common)
    plain = make_policy(plain_cfg, ds_meta=meta)
    plain.load_state_dict(ate.state_dict())
    plain.train()
    ate0_cfg = AteDiffusionConfig(**common, vae_path=vae, guidance_scale=0.0)
    ate0 = make_policy(ate0_cfg, ds_meta=meta)
    ate0.load_state_dict(ate.state_dict())
    ate0.train()

    ref, _ = _loss(plain, batch, 0)
    l0, d0 = _loss(ate0, batch, 0)
    l2, d2 = _loss(ate, batch, 0)
    l2.backward()
    vae_params = list(ate._ate.guide.encoder.parameters())
    out = {
        "upstream_loss": ref.item(), "ate_loss_scale0": l0.item(), "ate_loss_scale2": l2.item(),
        "diag_scale0": d0, "diag_scale2": d2,
        "pad_steps_in_batch": int(batch["action_is_pad"].sum().item()),
        "policy_params": sum(p.numel() for p in ate.parameters()),
        "upstream_params": sum(p.numel() for p in plain.parameters()),
        "vae_params": sum(p.numel() for p in vae_params),
        "vae_in_state_dict": any(k.startswith(("_ate", "vae", "encoder")) for k in ate.state_dict()),
        "state_dict_keys_equal": sorted(ate.state_dict()) == sorted(plain.state_dict()),
        "vae_param_ids_in_policy": len({id(p) for p in vae_params} & {id(p) for p in ate.parameters()}),
        "vae_grads": sum(p.grad is not None for p in vae_params),
        "policy_grads_finite": all(torch.isfinite(p.grad).all().item() for p in ate.parameters() if p.grad is not None),
    }
    # a VAE trained with other normalisation stats is refused at the first training step
    stats = {k: dict(v) for k, v in meta.stats.items()}
    stats["action"] = {**stats["action"], "max": stats["action"]["max"] * 2 + 1}
    wrong = AteDiffusionPolicy(AteDiffusionConfig(**common, vae_path=vae, input_features=ate.config.input_features,
                                                  output_features=ate.config.output_features), dataset_stats=stats)
    try:
        _loss(wrong.train(), batch, 0)
        out["wrong_stats_refused"] = False
    except CheckpointError as exc:
        out["wrong_stats_refused"] = "normaliser" in str(exc)
    if pretrained:
        cfg = AteDiffusionConfig(**common, vae_path=vae, pretrained_path=pretrained)
        loaded = make_policy(cfg, ds_meta=meta)
        src = DiffusionPolicy.from_pretrained(pretrained)
        a, b = loaded.state_dict(), src.state_dict()
        out["pretrained_weights_equal"] = sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    return out


# ---------------------------------------------------------------------------------------------- flow family
@contextmanager
def tiny_pi0(width: int = 64, depth: int = 2, vision_width: int = 32, module=None):
    """Build LeRobot's PI0Pytorch (or, with ``module=modeling_pi05``, PI05Pytorch) with small Gemma / SigLIP
    sizes (see module docstring).

    LeRobot hard-codes the variant table (``get_gemma_config``) and, in ``PaliGemmaWithExpertModel``,
    the vision tower (So400m defaults, intermediate 4304) and projector width 2048. The patch replaces the
    table, and hands PaliGemma a one-layer SigLIP whose projector maps to the tiny text width. Restored on
    exit.
    """
    from transformers import SiglipVisionConfig

    if module is None:
        from lerobot.policies.pi0 import modeling_pi0 as module
    real_table = module.get_gemma_config

    def table(variant):
        real_table(variant)  # keep LeRobot's own validation of the name
        return module.GemmaConfig(width=width, depth=depth, mlp_dim=2 * width, num_heads=8, num_kv_heads=1,
                                  head_dim=width // 8)  # 8 heads: LeRobot reshapes with a literal 8

    real_vlm = module.PaliGemmaForConditionalGenerationWithPiGemma

    def vlm(config):
        # replaces the So400m tower + 2048-wide projector that pi0 writes into the config
        config.vision_config = SiglipVisionConfig(
            hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=1, num_attention_heads=2,
            patch_size=14, image_size=config.vision_config.image_size, projection_dim=width, vision_use_head=False)
        return real_vlm(config=config)

    module.get_gemma_config, module.PaliGemmaForConditionalGenerationWithPiGemma = table, vlm
    try:
        yield
    finally:
        module.get_gemma_config, module.PaliGemmaForConditionalGenerationWithPiGemma = real_table, real_vlm


@contextmanager
def tiny_smolvla(width: int = 64, depth: int = 2, vision_width: int = 32, image_size: int = 56):
    """Build LeRobot's SmolVLA without the Hub: ``SmolVLMWithExpertModel`` reads the SmolVLM2 config and
    processor with ``from_pretrained`` even when ``load_vlm_weights=False``. The patch hands it a small
    ``SmolVLMConfig`` (same model type, Llama text model, SigLIP-style vision tower, pixel-shuffle
    connector) and a processor stub that carries only the two image token ids the model reads; the
    model, the expert, the attention layout and the loss are LeRobot's code. Restored on exit."""
    from types import SimpleNamespace

    from lerobot.policies.smolvla import smolvlm_with_expert as mod
    from transformers import SmolVLMConfig

    config = SmolVLMConfig(
        vision_config=dict(hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=1,
                           num_attention_heads=2, patch_size=14, image_size=image_size),
        text_config=dict(model_type="llama", hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=1024),
        scale_factor=2)
    tokenizer = SimpleNamespace(fake_image_token_id=1000, global_image_token_id=1001)
    real = mod.AutoConfig, mod.AutoProcessor
    mod.AutoConfig = SimpleNamespace(from_pretrained=lambda _id, **_kw: config)
    mod.AutoProcessor = SimpleNamespace(from_pretrained=lambda _id, **_kw: SimpleNamespace(tokenizer=tokenizer))
    try:
        yield
    finally:
        mod.AutoConfig, mod.AutoProcessor = real


def _flow_kind(kind: str):
    """(ATE config, ATE policy, LeRobot config, LeRobot policy, builder context, extra config kwargs)."""
    from ate.integrations.lerobot import configuration_ate as c
    from ate.integrations.lerobot import modeling_ate as m

    if kind == "pi0":
        from lerobot.policies.pi0.configuration_pi0 import PI0Config
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        return c.AtePI0Config, m.AtePI0Policy, PI0Config, PI0Policy, tiny_pi0, dict(image_resolution=(28, 28))
    if kind == "pi05":
        from lerobot.policies.pi05 import modeling_pi05
        from lerobot.policies.pi05.configuration_pi05 import PI05Config

        return (c.AtePI05Config, m.AtePI05Policy, PI05Config, modeling_pi05.PI05Policy,
                lambda: tiny_pi0(module=modeling_pi05), dict(image_resolution=(28, 28)))
    if kind == "smolvla":
        from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return (c.AteSmolVLAConfig, m.AteSmolVLAPolicy, SmolVLAConfig, SmolVLAPolicy, tiny_smolvla,
                dict(resize_imgs_with_padding=(56, 56), load_vlm_weights=False))
    raise ValueError(f"kind must be one of pi0, pi05, smolvla; got {kind!r}")


def check_flow(kind: str, vae: str, action_dim: int, chunk: int, batch_size: int = 2) -> dict:
    """LeRobot's real flow policy ``kind`` at reduced size: forward + backward, λ = 0 equality with the
    upstream policy, guidance only on the real action dims and off ``action_is_pad`` steps."""
    import time

    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    ate_cfg_cls, ate_cls, cfg_cls, cls, tiny, extra = _flow_kind(kind)
    feats_in = {"observation.state": PolicyFeature(FeatureType.STATE, (action_dim,)),
                "observation.images.cam": PolicyFeature(FeatureType.VISUAL, (3, 28, 28))}
    feats_out = {"action": PolicyFeature(FeatureType.ACTION, (action_dim,))}
    common = dict(chunk_size=chunk, n_action_steps=chunk, device="cpu", input_features=feats_in,
                  output_features=feats_out, **extra)
    if kind != "smolvla":
        common["dtype"] = "float32"
    t0 = time.perf_counter()
    with tiny():
        ate = ate_cls(ate_cfg_cls(**common, vae_path=vae, guidance_scale=2.0, guidance_clamp=None))
        plain = cls(cfg_cls(**common))
        ate0 = ate_cls(ate_cfg_cls(**common, vae_path=vae, guidance_scale=0.0))
    build_s = time.perf_counter() - t0
    plain.load_state_dict(ate.state_dict())
    ate0.load_state_dict(ate.state_dict())
    g = torch.Generator().manual_seed(0)
    pad = torch.zeros(batch_size, chunk, dtype=torch.bool)
    pad[0, chunk // 2:] = True
    batch = {
        "observation.state": torch.randn(batch_size, action_dim, generator=g),
        "observation.images.cam": torch.rand(batch_size, 3, 28, 28, generator=g),
        "action": torch.randn(batch_size, chunk, action_dim, generator=g),
        "action_is_pad": pad,
        OBS_LANGUAGE_TOKENS: torch.randint(0, 1000, (batch_size, 6), generator=g),
        OBS_LANGUAGE_ATTENTION_MASK: torch.ones(batch_size, 6, dtype=torch.bool),
    }
    for p in (ate, plain, ate0):
        p.train()
    ref, _ = _loss(plain, batch, 1)
    l0, d0 = _loss(ate0, batch, 1)
    t0 = time.perf_counter()
    l2, d2 = _loss(ate, batch, 1)
    l2.backward()
    step_s = time.perf_counter() - t0
    # where does the guidance act? re-draw the same noise / time and read g directly
    torch.manual_seed(1)
    actions = ate.prepare_action(batch)
    noise = ate.model.sample_noise(actions.shape, actions.device)
    t = ate.model.sample_time(actions.shape[0], actions.device)
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
    mask = torch.zeros(actions.shape[-1])
    mask[:action_dim] = 1
    gvec, _ = ate._ate.guide.gradient(x_t, actions, t, dim_mask=mask, pad_mask=pad)
    vae_params = list(ate._ate.guide.encoder.parameters())
    grads = [p.grad for p in ate.parameters() if p.grad is not None]
    return {
        "kind": kind, "policy_class": type(plain).__name__,
        "upstream_loss": ref.item(), "ate_loss_scale0": l0.item(), "ate_loss_scale2": l2.item(),
        "diag_scale0": d0, "diag_scale2": d2,
        "padded_dim": int(actions.shape[-1]), "action_dim": action_dim,
        "g_abs_on_padded_dims": gvec[..., action_dim:].abs().sum().item(),
        "g_abs_on_pad_steps": gvec[0, chunk // 2:].abs().sum().item(),
        "g_abs_on_valid": gvec[..., :action_dim].abs().sum().item(),
        "policy_params": sum(p.numel() for p in ate.parameters()),
        "vae_params": sum(p.numel() for p in vae_params),
        "vae_param_ids_in_policy": len({id(p) for p in vae_params} & {id(p) for p in ate.parameters()}),
        "vae_grads": sum(p.grad is not None for p in vae_params),
        "action_out_proj_grad": float(ate.model.action_out_proj.weight.grad.abs().sum().item()),
        "policy_grads_finite": bool(grads) and all(torch.isfinite(x).all().item() for x in grads),
        "build_s": build_s, "forward_backward_s": step_s,
    }


def check_pi0(vae: str, action_dim: int, chunk: int, batch_size: int = 2) -> dict:
    return check_flow("pi0", vae, action_dim, chunk, batch_size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="which", required=True)
    d = sub.add_parser("diffusion")
    d.add_argument("--dataset", required=True)
    d.add_argument("--vae", required=True)
    d.add_argument("--pretrained", default=None)
    for kind in ("pi0", "pi05", "smolvla"):
        q = sub.add_parser(kind)
        q.add_argument("--vae", required=True)
        q.add_argument("--action-dim", type=int, required=True)
        q.add_argument("--chunk", type=int, required=True)
    a = p.parse_args(argv)
    if a.which == "diffusion":
        out = check_diffusion(a.dataset, a.vae, a.pretrained)
    else:
        out = check_flow(a.which, a.vae, a.action_dim, a.chunk)
    print("ATE_SELFCHECK " + json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
