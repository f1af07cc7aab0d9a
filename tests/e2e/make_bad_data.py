#!/usr/bin/python3
"""make_bad_data.py OUTDIR: malformed or mismatched input data for the BERT-style fixture
(inputs input_ids and attention_mask, int64 [batch, seq])."""
import os
import sys

import numpy as np


def main(out):
    os.makedirs(out, exist_ok=True)
    ids = np.random.RandomState(0).randint(0, 50, (4, 6)).astype(np.int64)
    mask = np.ones((4, 6), np.int64)
    p = lambda n: os.path.join(out, n)
    np.savez(p("good.npz"), input_ids=ids, attention_mask=mask)
    np.savez(p("wrong_dtype.npz"), input_ids=ids.astype(np.float32), attention_mask=mask)
    np.savez(p("wrong_rank.npz"), input_ids=ids[:, :, None], attention_mask=mask)
    np.savez(p("empty.npz"), input_ids=ids[:0], attention_mask=mask[:0])
    np.savez(p("samples_differ.npz"), input_ids=ids, attention_mask=mask[:3])
    np.savez(p("missing.npz"), input_ids=ids)
    np.savez_compressed(p("deflated.npz"), input_ids=ids, attention_mask=mask)
    data = bytearray(open(p("good.npz"), "rb").read())
    data[120] ^= 0xFF  # inside the first member's array bytes: the CRC must catch it
    open(p("corrupt.npz"), "wb").write(bytes(data))
    open(p("truncated_zip.npz"), "wb").write(bytes(open(p("good.npz"), "rb").read()[:150]))
    os.makedirs(p("npy_dir"), exist_ok=True)
    np.save(p("npy_dir/input_ids.npy"), ids)
    np.save(p("npy_dir/attention_mask.npy"), mask)
    os.makedirs(p("truncated_npy"), exist_ok=True)
    np.save(p("truncated_npy/input_ids.npy"), ids)
    raw = open(p("npy_dir/attention_mask.npy"), "rb").read()
    open(p("truncated_npy/attention_mask.npy"), "wb").write(raw[:-16])


if __name__ == "__main__":
    main(sys.argv[1])
