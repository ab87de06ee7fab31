"""FLOPs counted from the shapes that ran (multiply-add = 2 FLOPs), matmuls only, as
`torch.utils.flop_counter.FlopCounterMode` counts them: embeddings, LayerNorm, GELU and softmax excluded."""
from __future__ import annotations


def linear_flops(tokens: int, d_in: int, d_out: int) -> float:
    return 2.0 * tokens * d_in * d_out


def layer_linear_flops(L: int, hidden: int, intermediate: int) -> float:
    """Q, K, V, output projection and the two FFN matmuls of one layer over L tokens of one row."""
    return 4 * linear_flops(L, hidden, hidden) + 2 * linear_flops(L, hidden, intermediate)


def dense_attention_flops(L: int, hidden: int) -> float:
    """QK^T and probs @ V over all heads, one row: 2 matmuls of L x L x hidden."""
    return 4.0 * L * L * hidden


def final_head_flops(hidden: int, num_labels: int) -> float:
    return linear_flops(1, hidden, hidden) + linear_flops(1, hidden, num_labels)


def static_flops_per_row(L: int, num_layers: int, hidden: int, intermediate: int, num_labels: int) -> float:
    """What the static model spends on one row of a batch padded to length L."""
    per_layer = layer_linear_flops(L, hidden, intermediate) + dense_attention_flops(L, hidden)
    return num_layers * per_layer + final_head_flops(hidden, num_labels)
