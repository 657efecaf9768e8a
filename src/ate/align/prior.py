"""Summary of the pretraining latent distribution q_φ(z), the target of stage-2 alignment.

Modes (SPEC "Prior summary"):
- ``aggregate`` (default): moment-matched diagonal Gaussian, m = E[μ(a)], s² = Var[μ(a)] + E[σ²(a)].
- ``reference``: m = E[μ(a)], s = E[σ(a)] on inputs noised with a 10-step cosine DDPM schedule at
  t ∈ {0, 1, 2} (what the public code does; ignores the spread of μ).
- ``gmm``: K-component diagonal Gaussian mixture fitted on latent samples (the paper speaks of modes);
  KL to a mixture has no closed form, so it is a Monte-Carlo estimate.
- ``standard_normal``: N(0, I), the stage-1 prior.
"""

from __future__ import annotations

import math
import sys

import torch
from torch.utils.data import DataLoader

from ate.align.losses import kl_diag_gaussians
from ate.errors import ShapeMismatchError

KINDS = ("standard_normal", "aggregate", "reference", "gmm")


def cosine_alphas_cumprod(num_steps: int = 10, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ of the cosine ("squaredcos_cap_v2") DDPM schedule, as diffusers' betas_for_alpha_bar computes it."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)],
                         dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


class PriorSummary:
    """A distribution over z ∈ R^Z with log_prob, sample and KL to a batch of diagonal Gaussians."""

    def __init__(self, kind: str, mean: torch.Tensor, std: torch.Tensor, weights: torch.Tensor | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown prior kind {kind!r}; choose from {KINDS}")
        self.kind = kind
        # Gaussian kinds: mean/std (Z,). gmm: weights (K,), mean/std (K, Z).
        self.mean, self.std = mean.float(), std.float().clamp_min(1e-6)
        self.weights = None if weights is None else (weights.float() / weights.sum())
        if kind == "gmm" and (self.weights is None or self.mean.ndim != 2):
            raise ValueError("a gmm prior needs weights (K,) and mean/std (K, Z)")

    @classmethod
    def standard_normal(cls, latent_dim: int) -> "PriorSummary":
        return cls("standard_normal", torch.zeros(latent_dim), torch.ones(latent_dim))

    @property
    def latent_dim(self) -> int:
        return self.mean.shape[-1]

    def _components(self, device):
        if self.kind == "gmm":
            return self.weights.to(device), self.mean.to(device), self.std.to(device)
        return torch.ones(1, device=device), self.mean[None].to(device), self.std[None].to(device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for z (B, Z) -> (B,)."""
        if z.shape[-1] != self.latent_dim:
            raise ShapeMismatchError(f"prior has Z={self.latent_dim}, got latents with Z={z.shape[-1]}")
        w, m, s = self._components(z.device)
        comp = torch.distributions.Normal(m, s).log_prob(z.unsqueeze(1)).sum(-1)  # (B, K)
        return torch.logsumexp(comp + w.log(), dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        w, m, s = self._components("cpu")
        idx = torch.multinomial(w, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, generator=generator)
        return (m[idx] + s[idx] * eps).to(device)

    def kl_draws(self, n: int, direction: str = "paper", generator: torch.Generator | None = None,
                 num_samples: int = 1) -> torch.Tensor | None:
        """The random draws :meth:`kl` needs for a batch of ``n`` rows, (S, n, Z) on the CPU; None when the KL
        has a closed form (every kind but gmm). paper: standard-normal ε for z = μ + σ·ε; reference: samples of
        this prior. Column i belongs to row i, so a process holding rows [a, b) of a global batch draws for
        the global batch and passes ``draws[:, a:b]`` (the draws then do not depend on how rows are split)."""
        if self.kind != "gmm":
            return None
        if direction == "paper":
            return torch.randn((num_samples, n, self.latent_dim), generator=generator)
        return self.sample(num_samples * n, generator).view(num_samples, n, self.latent_dim)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor, direction: str = "paper",
           generator: torch.Generator | None = None, num_samples: int = 1,
           draws: torch.Tensor | None = None) -> torch.Tensor:
        """KL between q(z|a) = N(μ, σ²) (batch (B, Z)) and this prior, averaged over batch and latent dims.

        direction="paper": KL(q ‖ p), reverse / mode-seeking (default).
        direction="reference": KL(p ‖ q), what the public code computes (arguments swapped).
        draws: the gmm Monte-Carlo draws, (S, B, Z) from :meth:`kl_draws`; None: drawn here from ``generator``.
        """
        if mu.shape[-1] != self.latent_dim:
            raise ShapeMismatchError(f"prior has Z={self.latent_dim}, encoder outputs Z={mu.shape[-1]}")
        if direction not in ("paper", "reference"):
            raise ValueError(f"unknown KL direction {direction!r}; use 'paper' or 'reference'")
        if self.kind != "gmm":
            m, logv = self.mean.to(mu), (2 * self.std.log()).to(mu)
            if direction == "paper":
                return kl_diag_gaussians(mu, logvar, m, logv).mean()
            return kl_diag_gaussians(m.expand_as(mu), logv.expand_as(mu), mu, logvar).mean()
        if draws is None:
            draws = self.kl_draws(mu.shape[0], direction, generator, num_samples)
        if draws.shape[1:] != mu.shape:
            raise ShapeMismatchError(f"KL draws {tuple(draws.shape)} do not fit a batch {tuple(mu.shape)}")
        draws, num_samples = draws.to(mu), draws.shape[0]
        # Monte-Carlo for the mixture; divided by Z to keep the per-dimension scale of the closed forms.
        std = torch.exp(0.5 * logvar)
        q = torch.distributions.Normal(mu.unsqueeze(0), std.unsqueeze(0))  # (1, B, Z)
        if direction == "paper":
            z = mu + std * draws  # (S, B, Z), reparameterised
            diff = q.log_prob(z).sum(-1) - self.log_prob(z.reshape(-1, z.shape[-1])).view(num_samples, -1)
        else:
            z = draws
            diff = self.log_prob(z.reshape(-1, z.shape[-1])).view(num_samples, -1) - q.log_prob(z).sum(-1)
        return diff.mean() / self.latent_dim

    # ---- serialisation (safetensors tensors + a kind string in the JSON config) ----
    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"mean": self.mean.contiguous(), "std": self.std.contiguous()}
        if self.weights is not None:
            out["weights"] = self.weights.contiguous()
        return out

    @classmethod
    def from_tensors(cls, kind: str, tensors: dict[str, torch.Tensor]) -> "PriorSummary":
        return cls(kind, tensors["mean"], tensors["std"], tensors.get("weights"))

    def describe(self) -> str:
        if self.kind == "gmm":
            return f"gmm(K={self.weights.numel()}, Z={self.latent_dim})"
        return (f"{self.kind}(Z={self.latent_dim}, |mean|={self.mean.norm():.3f}, "
                f"std in [{self.std.min():.3f}, {self.std.max():.3f}])")


@torch.no_grad()
def fit_prior(vae, dataset, mode: str = "aggregate", batch_size: int = 256, max_samples: int = 200_000,
              gmm_components: int = 8, seed: int = 0, progress: bool = False) -> PriorSummary:
    """Encode pretraining chunks (at most ``max_samples`` windows, a seeded random subset) and summarise."""
    if mode not in ("aggregate", "reference", "gmm"):
        raise ValueError(f"unknown prior mode {mode!r}; use aggregate, reference or gmm")
    g = torch.Generator().manual_seed(seed)
    n = min(len(dataset), max_samples)
    indices = torch.randperm(len(dataset), generator=g)[:n].tolist() if n < len(dataset) else list(range(n))
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False)
    was_training = vae.training
    vae.eval()
    abar = cosine_alphas_cumprod(10)[:3].float() if mode == "reference" else None
    z_dim = vae.config.latent_dim
    s_mu = torch.zeros(z_dim, dtype=torch.float64)
    s_mu2, s_var, s_std = torch.zeros_like(s_mu), torch.zeros_like(s_mu), torch.zeros_like(s_mu)
    count, samples = 0, []
    if progress and sys.stderr.isatty():  # no redrawn bar in log files
        from tqdm.auto import tqdm
        loader = tqdm(loader, desc=f"prior ({mode})", unit="batch", mininterval=1.0)
    for batch in loader:
        a = batch["action"]
        inputs = [a] if abar is None else [abar[t].sqrt() * a + (1 - abar[t]).sqrt() * torch.randn(a.shape, generator=g)
                                           for t in range(3)]
        for x in inputs:
            mu, logvar = vae.encode(x)
            mu64, var64 = mu.double(), logvar.double().exp()
            s_mu += mu64.sum(0); s_mu2 += (mu64 ** 2).sum(0); s_var += var64.sum(0); s_std += var64.sqrt().sum(0)
            count += mu.shape[0]
            if mode == "gmm":
                samples.append(mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g))
    vae.train(was_training)
    if count == 0:
        from ate.errors import DataError
        raise DataError("cannot fit a prior summary: the pretraining dataset yielded no chunks")
    m = s_mu / count
    if mode == "aggregate":
        return PriorSummary("aggregate", m.float(), (s_mu2 / count - m ** 2 + s_var / count).clamp_min(1e-12).sqrt().float())
    if mode == "reference":
        return PriorSummary("reference", m.float(), (s_std / count).float())
    from sklearn.mixture import GaussianMixture  # optional dependency (extra "viz")

    zs = torch.cat(samples).numpy()
    gm = GaussianMixture(gmm_components, covariance_type="diag", random_state=seed, reg_covar=1e-5).fit(zs)
    return PriorSummary("gmm", torch.as_tensor(gm.means_), torch.as_tensor(gm.covariances_).sqrt(),
                        torch.as_tensor(gm.weights_))
