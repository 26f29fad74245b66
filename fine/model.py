"""A pixel-space DiT whose block linears are either dense or learngene-backed.

Learngene-backed ("factored") blocks compute W_t(l) = U_t diag(sigma_t(l)) V_t^T, with one
(U_t, V_t) pair per weight type shared by every block and only sigma and the bias per layer.
The embedding conventions (timestep features, 2-D sin-cos positions, chunk order of adaLN)
follow diffusers' DiTTransformer2DModel so that a dense model exports to it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fine.config import WEIGHT_TYPES, DiTConfig, linear_shapes
from fine.spec import SIGMA_INITS

LN_EPS = 1e-6


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features, cosines first (diffusers: flip_sin_to_cos, shift 1)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.reshape(-1).double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid: int, base_grid: int | None = None) -> torch.Tensor:
    """(grid*grid, dim) fixed position embedding.

    Positions are scaled to the base grid, so a model trained on a 7x7 grid evaluates the same
    function at interpolated positions on an 8x8 grid (this is how other image sizes are served).
    """
    base = grid if base_grid is None else base_grid
    coords = torch.arange(grid, dtype=torch.float64) * (base / grid)
    w, h = torch.meshgrid(coords, coords, indexing="xy")
    emb = torch.cat([sincos_1d(dim // 2, w), sincos_1d(dim // 2, h)], dim=1)
    return emb.float()


class PatchEmbed(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, kernel_size=p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.freq_dim = cfg.freq_dim
        d = cfg.hidden_size
        self.mlp = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))


class LabelEmbedder(nn.Module):
    """Class embedding with one extra row, index num_classes, for the null label of CFG."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.num_classes = cfg.num_classes
        self.dropout = cfg.class_dropout
        self.embedding_table = nn.Embedding(cfg.num_classes + 1, cfg.hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class Learngene(nn.Module):
    """One shared factor pair (U: out x r, V: in x r) for one weight type."""

    def __init__(self, out_features: int, in_features: int, rank: int):
        super().__init__()
        self.U = nn.Parameter(torch.empty(out_features, rank))
        self.V = nn.Parameter(torch.empty(in_features, rank))


class FactoredLinear(nn.Module):
    """y = x V diag(sigma) U^T + b, with U, V borrowed from a shared Learngene."""

    def __init__(self, gene: Learngene):
        super().__init__()
        # Not registered as a submodule: the model registers each gene once, so the
        # state dict holds it once and every layer sees the same tensors.
        object.__setattr__(self, "gene", gene)
        out_features, rank = gene.U.shape
        self.in_features = gene.V.shape[0]
        self.sigma = nn.Parameter(torch.ones(rank))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def dense_weight(self) -> torch.Tensor:
        return (self.gene.U * self.sigma) @ self.gene.V.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        U, V = self.gene.U, self.gene.V
        out_f, rank = U.shape
        in_f = V.shape[0]
        n = x.numel() // in_f
        # Pick the cheaper of: materialise W once (r*in*out + n*in*out multiply-adds)
        # or go through the rank-r bottleneck (n*r*(in+out)).
        if rank * in_f * out_f + n * in_f * out_f <= n * rank * (in_f + out_f):
            return F.linear(x, self.dense_weight(), self.bias)
        return F.linear(F.linear(x, V.T) * self.sigma, U, self.bias)


def make_linear(cfg: DiTConfig, kind: str, genes: nn.ModuleDict | None) -> nn.Module:
    if genes is None:
        out_f, in_f = linear_shapes(cfg)[kind]
        return nn.Linear(in_f, out_f)
    return FactoredLinear(genes[kind])


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: DiTConfig, genes: nn.ModuleDict | None):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = make_linear(cfg, "qkv", genes)
        self.proj = make_linear(cfg, "proj", genes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, cfg: DiTConfig, genes: nn.ModuleDict | None):
        super().__init__()
        self.fc1 = make_linear(cfg, "fc1", genes)
        self.fc2 = make_linear(cfg, "fc2", genes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """adaLN-Zero transformer block."""

    def __init__(self, cfg: DiTConfig, genes: nn.ModuleDict | None):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=LN_EPS)
        self.attn = Attention(cfg, genes)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=LN_EPS)
        self.mlp = Mlp(cfg, genes)
        self.adaLN = make_linear(cfg, "adaLN", genes)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN(F.silu(c)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))

    def linears(self) -> dict[str, nn.Module]:
        return {
            "qkv": self.attn.qkv,
            "proj": self.attn.proj,
            "fc1": self.mlp.fc1,
            "fc2": self.mlp.fc2,
            "adaLN": self.adaLN,
        }


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=LN_EPS)
        self.adaLN = nn.Linear(d, 2 * d)
        self.linear = nn.Linear(d, cfg.patch_size**2 * cfg.in_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN(F.silu(c)).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Class-conditional DiT predicting the noise of a noised image.

    With cfg.rank set, the blocks are learngene-backed (`genes` holds U_t, V_t); otherwise they
    are ordinary nn.Linear layers.
    """

    def __init__(self, cfg: DiTConfig, base_grid: int | None = None):
        super().__init__()
        self.cfg = cfg
        # base_grid != grid only for a descendant on a different image size than its ancestry.
        self.base_grid = base_grid or cfg.grid_size
        self.x_embedder = PatchEmbed(cfg)
        self.register_buffer(
            "pos_embed",
            sincos_2d(cfg.hidden_size, cfg.grid_size, self.base_grid)[None],
            persistent=False,
        )
        self.t_embedder = TimestepEmbedder(cfg)
        self.y_embedder = LabelEmbedder(cfg)
        self.genes: nn.ModuleDict | None = None
        if cfg.factored:
            assert cfg.rank is not None
            self.genes = nn.ModuleDict(
                {k: Learngene(o, i, cfg.rank) for k, (o, i) in linear_shapes(cfg).items()}
            )
        self.blocks = nn.ModuleList([Block(cfg, self.genes) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)
        self.initialize_weights()

    # -- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def initialize_weights(self, generator: torch.Generator | None = None, sigma_init: str = "random") -> None:
        """DiT's initialisation; learngenes get orthonormal factors and sigma per `sigma_init`.

        adaLN modulations and the final layer are zeroed (adaLN-Zero: every block starts as the
        identity and the model starts by predicting zero noise).
        """
        if sigma_init not in SIGMA_INITS:
            raise ValueError(f"unknown sigma_init {sigma_init!r}: use one of {', '.join(SIGMA_INITS)}")
        g = generator
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _xavier_(m.weight, g)
                m.bias.zero_()
        w = self.x_embedder.proj.weight
        _xavier_(w.view(w.shape[0], -1), g)
        self.x_embedder.proj.bias.zero_()
        self.y_embedder.embedding_table.weight.normal_(0, 0.02, generator=g)
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            lin.weight.normal_(0, 0.02, generator=g)
        if self.genes is not None:
            for kind, gene in self.genes.items():
                gene.U.copy_(_orthonormal(gene.U.shape, g))
                gene.V.copy_(_orthonormal(gene.V.shape, g))
                out_f, in_f = gene.U.shape[0], gene.V.shape[0]
                # sigma of RMS s0 gives W the Frobenius norm of a Xavier matrix.
                s0 = math.sqrt(2.0 * out_f * in_f / ((out_f + in_f) * gene.U.shape[1]))
                for block in self.blocks:
                    lin = block.linears()[kind]
                    if sigma_init == "random":
                        lin.sigma.normal_(0, s0, generator=g)
                    else:
                        lin.sigma.normal_(0, 0.01, generator=g).add_(1.0).mul_(s0)
                    lin.bias.zero_()
        for block in self.blocks:
            ada = block.adaLN
            if isinstance(ada, FactoredLinear):
                ada.sigma.zero_()
            else:
                ada.weight.zero_()
            ada.bias.zero_()
        for lin in (self.final_layer.adaLN, self.final_layer.linear):
            lin.weight.zero_()
            lin.bias.zero_()

    # -- forward --------------------------------------------------------------------------
    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p, c, g = self.cfg.patch_size, self.cfg.in_channels, self.cfg.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final_layer(h, c))

    # -- factored <-> dense ---------------------------------------------------------------
    def sigma_parameters(self) -> list[nn.Parameter]:
        return [lin.sigma for b in self.blocks for lin in b.linears().values()]

    def block_bias_parameters(self) -> list[nn.Parameter]:
        return [lin.bias for b in self.blocks for lin in b.linears().values()]

    @torch.no_grad()
    def materialize(self) -> DiT:
        """An ordinary dense DiT computing the same function."""
        if self.genes is None:
            raise ValueError("model is already dense")
        dense = DiT(self.cfg.replace(rank=None), base_grid=self.base_grid)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("genes.")}
        for i, block in enumerate(self.blocks):
            for name, lin in _named_linears(block).items():
                prefix = f"blocks.{i}.{name}"
                del state[f"{prefix}.sigma"]
                state[f"{prefix}.weight"] = lin.dense_weight()
        dense.load_state_dict(state)
        return dense.to(next(self.parameters()).device)


def _named_linears(block: Block) -> dict[str, FactoredLinear]:
    names = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    names["adaLN"] = "adaLN"
    return {names[k]: lin for k, lin in block.linears().items()}  # type: ignore[misc]


def _xavier_(w: torch.Tensor, g: torch.Generator | None) -> None:
    fan_out, fan_in = w.shape[0], w[0].numel()
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    w.uniform_(-bound, bound, generator=g)


def _orthonormal(shape: tuple[int, ...] | torch.Size, g: torch.Generator | None) -> torch.Tensor:
    """A (rows x r) matrix with orthonormal columns (or rows, when r > rows)."""
    rows, r = shape
    a = torch.randn(max(rows, r), min(rows, r), generator=g)
    q, _ = torch.linalg.qr(a)
    return q if rows >= r else q.T


assert set(WEIGHT_TYPES) == set(linear_shapes(DiTConfig()))
