#!/usr/bin/python3
"""make_bert_base.py OUT.onnx: a BERT-base-sized encoder (12 layers, hidden 768, 12 heads, FFN 3072,
vocabulary 30522; about 440 MB) exported by torch.onnx like the Hugging Face BERT, random weights."""
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

E, H, FF, L, V = 768, 12, 3072, 12, 30522
D = E // H


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.fc1, self.fc2 = nn.Linear(E, FF), nn.Linear(FF, E)

    def heads(self, x):
        return x.view(x.size()[:-1] + (H, D)).permute(0, 2, 1, 3)

    def forward(self, x, m):
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        c = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D) + m, -1), v)
        c = c.permute(0, 2, 1, 3).contiguous()
        x = self.ln1(x + self.o(c.view(c.size()[:-2] + (E,))))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class Bert(nn.Module):
    def __init__(self):
        super().__init__()
        self.word, self.pos = nn.Embedding(V, E), nn.Embedding(512, E)
        self.layers = nn.ModuleList(Layer() for _ in range(L))

    def forward(self, ids, mask):
        x = self.word(ids) + self.pos(torch.arange(ids.size(1))[None])
        m = (1.0 - mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, m)
        return x


ids = torch.randint(0, V, (1, 128))
torch.onnx.export(Bert().eval(), (ids, torch.ones_like(ids)), sys.argv[1], input_names=["input_ids", "attention_mask"],
                  output_names=["hidden"], opset_version=14,
                  dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}})
