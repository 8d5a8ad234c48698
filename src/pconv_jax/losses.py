"""The paper's loss (DESIGN.md §1): six pure terms and their weighted sum.

Images are (N,H,W,3) in [-1, 1]; mask (N,H,W,1) with 1 = valid, 0 = hole. All L1 norms are
means over every element. With I_comp = M * I_gt + (1 - M) * I_out and Psi_p the VGG-16
activations at pool1..3:

    valid      = mean|M (I_out - I_gt)|                 hole = mean|(1 - M)(I_out - I_gt)|
    perceptual = sum_p mean|Psi_p(I_out) - Psi_p(I_gt)| + sum_p mean|Psi_p(I_comp) - Psi_p(I_gt)|
    style_out  = sum_p mean|G_p(I_out) - G_p(I_gt)|,  G_p = Psi_p^T Psi_p / (C_p H_p W_p)
    style_comp = the same with I_comp
    tv         = sum over adjacent pixel pairs inside P (the hole region dilated by one pixel)
                 of |I_comp(a) - I_comp(b)|, divided by the number of elements of I_comp
    total      = valid + 6 hole + 0.05 perceptual + 120 (style_out + style_comp) + 0.1 tv

Given the weights, `loss_terms` runs VGG-16 only where a term needs it: a term of weight 0
never costs a VGG backward pass, and with all three VGG terms at 0 no VGG runs at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Features = Callable[[Array], Sequence[Array]]
TERMS: tuple[str, ...] = ("valid", "hole", "perceptual", "style_out", "style_comp", "tv")
VGG_TERMS: tuple[str, ...] = ("perceptual", "style_out", "style_comp")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the six terms; the defaults are the paper's."""

    valid: float = 1.0
    hole: float = 6.0
    perceptual: float = 0.05
    style_out: float = 120.0
    style_comp: float = 120.0
    tv: float = 0.1

    def as_dict(self) -> dict[str, float]:
        """{term: weight} in the order of TERMS."""
        return {name: float(getattr(self, name)) for name in TERMS}


def composite(output: Array, target: Array, mask: Array) -> Array:
    """I_comp: the ground truth where valid, the prediction in the holes."""
    return mask * target + (1 - mask) * output


def valid_loss(output: Array, target: Array, mask: Array) -> Array:
    """mean|M (I_out - I_gt)| over all N*H*W*C elements."""
    return jnp.mean(jnp.abs(mask * (output - target)))


def hole_loss(output: Array, target: Array, mask: Array) -> Array:
    """mean|(1 - M)(I_out - I_gt)| over all N*H*W*C elements."""
    return jnp.mean(jnp.abs((1 - mask) * (output - target)))


def gram_matrix(features: Array) -> Array:
    """(N,H,W,C) -> (N,C,C) float32 Gram matrices normalised by C*H*W: the products of
    bfloat16 features accumulate in float32 (preferred_element_type), and the division is in
    float32, where the H*W-term sums cannot overflow or lose their small entries."""
    n, h, w, c = features.shape
    flat = features.reshape(n, h * w, c)
    gram = jnp.einsum("npc,npd->ncd", flat, flat, preferred_element_type=jnp.float32)
    return gram / (c * h * w)


def perceptual_loss(
    feats_out: Sequence[Array], feats_comp: Sequence[Array], feats_gt: Sequence[Array]
) -> Array:
    """sum_p mean|Psi_p(out) - Psi_p(gt)| + sum_p mean|Psi_p(comp) - Psi_p(gt)|, in float32
    whatever the features' dtype."""
    def l1(a: Array, b: Array) -> Array:
        return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))

    return sum(l1(fo, fg) + l1(fc, fg)
               for fo, fc, fg in zip(feats_out, feats_comp, feats_gt, strict=True))


def style_loss(feats: Sequence[Array], feats_gt: Sequence[Array]) -> Array:
    """sum_p mean|G_p(I) - G_p(I_gt)| with the mean over the batch and the C_p^2 entries."""
    return sum(
        jnp.mean(jnp.abs(gram_matrix(f) - gram_matrix(g)))
        for f, g in zip(feats, feats_gt, strict=True)
    )


def tv_loss(comp: Array, mask: Array) -> Array:
    """Total variation of I_comp over pixel pairs inside the one-pixel dilation of the holes."""
    hole = 1 - mask  # (N,H,W,1)
    region = lax.reduce_window(hole, 0.0, lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")  # P
    pair_h = region[:, :, 1:] * region[:, :, :-1]  # both pixels of a horizontal pair in P
    pair_v = region[:, 1:] * region[:, :-1]
    total = (jnp.sum(pair_h * jnp.abs(comp[:, :, 1:] - comp[:, :, :-1]))
             + jnp.sum(pair_v * jnp.abs(comp[:, 1:] - comp[:, :-1])))
    return total / comp.size


def logged_terms(weights: LossWeights | None = None, log_zero_terms: bool = False) -> tuple:
    """The keys `loss_terms` returns for these weights, in the order of TERMS."""
    if weights is None or log_zero_terms:
        return TERMS
    return tuple(t for t in TERMS if t not in VGG_TERMS or getattr(weights, t) != 0)


def needs_vgg(weights: LossWeights | None = None, log_zero_terms: bool = False) -> bool:
    """Whether `loss_terms` calls the VGG features for these weights."""
    return any(t in VGG_TERMS for t in logged_terms(weights, log_zero_terms))


def loss_terms(output: Array, target: Array, mask: Array, features: Features | None,
               weights: LossWeights | None = None, *,
               log_zero_terms: bool = False) -> dict[str, Array]:
    """The loss terms for output, target (N,H,W,3) in [-1,1], mask (N,H,W,1); `features` maps
    an image batch to its activation maps (VGG16Features in training).

    Without `weights`, all six terms, each differentiable. With `weights`, a VGG term of
    weight 0 is left out, or with `log_zero_terms` computed forward-only (stop_gradient) for
    its curve; either way it costs no VGG backward pass, and `features` (which may then be
    None) is not called when no VGG term is wanted.
    """
    if output.shape != target.shape or output.ndim != 4:
        raise ValueError(
            f"output {tuple(output.shape)} and target {tuple(target.shape)} must be equal (N,H,W,C)"
        )
    if mask.shape != (*output.shape[:3], 1):
        raise ValueError(f"mask must be {(*output.shape[:3], 1)}, got {tuple(mask.shape)}")
    mask = mask.astype(output.dtype)
    comp = composite(output, target, mask)
    terms = {"valid": valid_loss(output, target, mask),
             "hole": hole_loss(output, target, mask),
             "tv": tv_loss(comp, mask)}
    trained = {t: weights is None or getattr(weights, t) != 0 for t in VGG_TERMS}
    wanted = {t: trained[t] or log_zero_terms for t in VGG_TERMS}
    if not any(wanted.values()):
        return {name: terms[name] for name in TERMS if name in terms}
    if features is None:
        raise ValueError(f"the terms {[t for t in VGG_TERMS if wanted[t]]} need VGG features")
    feats = _vgg_features({"out": output, "comp": comp, "gt": target}, features, {
        "out": (trained["perceptual"] or trained["style_out"],
                wanted["perceptual"] or wanted["style_out"]),
        "comp": (trained["perceptual"] or trained["style_comp"],
                 wanted["perceptual"] or wanted["style_comp"]),
    })

    def inputs(term: str, *names: str) -> list:  # the features a term reads, cut off if untrained
        cut = (lambda f: f) if trained[term] else lax.stop_gradient
        return [[cut(f) for f in feats[name]] for name in names]

    if wanted["perceptual"]:
        terms["perceptual"] = perceptual_loss(*inputs("perceptual", "out", "comp", "gt"))
    if wanted["style_out"]:
        terms["style_out"] = style_loss(*inputs("style_out", "out", "gt"))
    if wanted["style_comp"]:
        terms["style_comp"] = style_loss(*inputs("style_comp", "comp", "gt"))
    return {name: terms[name] for name in TERMS if name in terms}


def _vgg_features(images: Mapping[str, Array], features: Features,
                  need: Mapping[str, tuple[bool, bool]]) -> dict[str, list[Array]]:
    """{name: [pool1, pool2, pool3]} for 'gt' and each image whose need is (grad, wanted).

    Images that need a gradient share one VGG pass ([I_out; I_comp] in training); the ground
    truth and images wanted only for logging share one pass under stop_gradient, so no VGG
    backward pass is spent on them.
    """
    n = images["gt"].shape[0]
    grad = [name for name, (g, _) in need.items() if g]
    nograd = [name for name, (g, w) in need.items() if w and not g] + ["gt"]
    out: dict[str, list[Array]] = {}
    for names, cut in ((grad, False), (nograd, True)):
        if not names:
            continue
        batch = jnp.concatenate([images[name] for name in names], axis=0)  # (k*N,H,W,3)
        maps = features(lax.stop_gradient(batch) if cut else batch)
        maps = [lax.stop_gradient(f) for f in maps] if cut else list(maps)
        for i, name in enumerate(names):
            out[name] = [f[i * n:(i + 1) * n] for f in maps]
    return out


def total_loss(terms: Mapping[str, Array], weights: LossWeights = LossWeights()) -> Array:
    """sum_k weight_k * term_k; a term whose weight is 0 is left out entirely (and may be
    absent from `terms`)."""
    missing = [name for name, w in weights.as_dict().items() if w != 0 and name not in terms]
    if missing:
        raise KeyError(f"loss terms missing: {missing}")
    parts = [w * terms[name] for name, w in weights.as_dict().items() if w != 0]
    return sum(parts) if parts else jnp.zeros(())
