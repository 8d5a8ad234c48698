"""Cross-check of pconv_jax.fid and pconv_jax.lpips against the reference packages themselves.

The tests compare with NumPy references written from the definitions; this script runs the
real pytorch-fid 0.3 and lpips 0.1 code on the same random weights and images, once, where
torch is installed (not a dependency of the project):

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision pytorch-fid lpips
    /tmp/tv/bin/python benchmarks/crosscheck_metrics.py torch /tmp/xcheck     # references
    .venv/bin/python benchmarks/crosscheck_metrics.py compare /tmp/xcheck HEADS  # ours vs them

where HEADS is the vgg.pth path the first command prints (the lpips package's trained heads).

LPIPS uses the package's own trained heads (weights/v0.1/vgg.pth, shipped in its wheel) and a
random VGG-16 (the ImageNet one would be a download); FID uses random Inception weights in
pytorch-fid's layout, since its file is a download too.
"""

import os
import sys

import numpy as np


def run_torch(out: str) -> None:
    """Writes weights, images and the reference packages' outputs to `out`."""
    import lpips
    import pytorch_fid.inception as pfi
    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance
    from safetensors.torch import save_file

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    # FID Inception: build pytorch-fid's network without its download, load random weights
    pfi.load_state_dict_from_url = lambda *a, **k: None
    original = torch.nn.Module.load_state_dict
    torch.nn.Module.load_state_dict = lambda self, state, *a, **k: None
    inner, build = {}, pfi.fid_inception_v3
    pfi.fid_inception_v3 = lambda: inner.setdefault("net", build())  # torchvision's names
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    torch.nn.Module.load_state_dict = original
    weights = {}
    for name, value in inner["net"].state_dict().items():
        if name.endswith("num_batches_tracked") or name.startswith("fc."):
            continue
        if "bn.running_var" in name or "bn.weight" in name:
            data = rng.uniform(0.5, 1.5, value.shape)
        elif "conv.weight" in name:
            data = rng.normal(size=value.shape) * np.sqrt(2 / np.prod(value.shape[1:]))
        else:
            data = rng.normal(0, 0.1, value.shape)
        weights[name] = torch.tensor(data, dtype=torch.float32)
        value.copy_(weights[name])
    save_file({k: v.contiguous() for k, v in weights.items()}, f"{out}/inception.safetensors")
    images = rng.uniform(0, 1, (6, 3, 137, 181)).astype(np.float32)  # NCHW, odd size: resize
    with torch.no_grad():
        feats = model(torch.tensor(images))[0][:, :, 0, 0].numpy()
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(50, 8)) * 1.5 + 0.3
    fid_value = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                                           np.cov(b, rowvar=False))
    # LPIPS-VGG: the package's trained heads, a random VGG-16 backbone
    metric = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
    vgg = {}
    for slice_ in (metric.net.slice1, metric.net.slice2, metric.net.slice3,
                   metric.net.slice4, metric.net.slice5):
        for index, layer in slice_.named_children():
            if isinstance(layer, torch.nn.Conv2d):
                w = torch.tensor(rng.normal(size=layer.weight.shape) *
                                 np.sqrt(2 / np.prod(layer.weight.shape[1:])), dtype=torch.float32)
                layer.weight.data.copy_(w)
                layer.bias.data.copy_(torch.tensor(rng.normal(0, 0.01, layer.bias.shape)))
                vgg[f"features.{index}.weight"] = w
                vgg[f"features.{index}.bias"] = layer.bias.data.clone()
    save_file(vgg, f"{out}/vgg_all.safetensors")
    x0 = rng.uniform(0, 1, (4, 3, 64, 80)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.2, x0.shape), 0, 1).astype(np.float32)
    with torch.no_grad():
        dist = metric(torch.tensor(x0), torch.tensor(x1), normalize=True).flatten().numpy()
    np.savez(f"{out}/reference.npz", images=images, feats=feats, a=a, b=b, fid=fid_value,
             x0=x0, x1=x1, lpips=dist)
    heads = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
    print(f"wrote {out}; heads file: {heads}")


def compare(out: str, heads: str) -> None:
    """Prints the relative differences of ours against the saved reference outputs."""
    from pconv_jax import fid, lpips

    ref = np.load(f"{out}/reference.npz")
    net = fid.load_inception(f"{out}/inception.safetensors")
    feats = net.features(ref["images"].transpose(0, 2, 3, 1))
    rel = np.abs(feats - ref["feats"]).max() / np.abs(ref["feats"]).max()
    ours = fid.fid(ref["a"], ref["b"])
    print(f"Inception pool3: max |diff| / max |ref| = {rel:.2e}")
    print(f"FID: ours {ours:.10f}, pytorch-fid {float(ref['fid']):.10f}")
    metric = lpips.load_lpips(f"{out}/vgg_all.safetensors", heads)
    d = metric(ref["x0"].transpose(0, 2, 3, 1), ref["x1"].transpose(0, 2, 3, 1))
    print(f"LPIPS: ours {np.round(d, 6)}, lpips {np.round(ref['lpips'], 6)}, max rel "
          f"{np.max(np.abs(d - ref['lpips']) / ref['lpips']):.2e}")


if __name__ == "__main__":
    if sys.argv[1] == "torch":
        run_torch(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3])
