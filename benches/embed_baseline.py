"""Python baseline for the embeddings benchmark: the same int8 ONNX file through
onnxruntime-python with the Hugging Face tokenizers library, batched the way
sentence-transformers' encode() does it (sorted by length, batch 32, mean pooling over the
attention mask, L2 normalised).

    python embed_baseline.py MODEL_DIR TEXTS.jsonl [BATCH]   -> {"texts": N, "seconds": S}
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    model_dir, texts_path = sys.argv[1], sys.argv[2]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    texts = [json.loads(line) for line in open(texts_path, encoding="utf-8")]
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.enable_truncation(256)
    tok.enable_padding()
    session = ort.InferenceSession(f"{model_dir}/model.onnx", providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def embed(chunk):
        enc = tok.encode_batch(chunk)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        m = mask[:, :, None].astype(np.float32)
        v = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    embed(texts[:batch])  # warm-up, as the stage's model is loaded and probed before timing
    started = time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = [None] * len(texts)
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        for i, v in zip(idx, embed([texts[i] for i in idx])):
            out[i] = v
    seconds = time.perf_counter() - started
    assert all(v is not None and v.shape == (384,) for v in out)
    print(json.dumps({"texts": len(texts), "seconds": seconds}))


if __name__ == "__main__":
    main()
