"""The one interface between a mechanism and the encoder's layer loop.

For each layer the loop asks every plugged mechanism, in order:
  1. `attention(layer, state)`: an attention function to use instead of dense attention (or None);
  2. `wants_received_attention(layer)`: whether it needs the attention each token received;
and after the layer has run:
  3. `after_layer(layer, state)`: returns the state to continue with (rows may leave, tokens may be
     dropped); `state.received` holds the attention each token received, when asked for.
The static model is the same loop with no mechanism plugged in.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

from torch import Tensor, nn

from eat.model.state import State

# attend(q, k, v, need_received, dropout_p) -> (context (B,H,L,dh), received (B,L) or None, FLOPs per row)
AttentionFn = Callable[[Tensor, Tensor, Tensor, bool, float], Tuple[Tensor, Optional[Tensor], float]]


class Mechanism(nn.Module):
    def attention(self, layer: int, state: State) -> Optional[AttentionFn]:
        return None

    def wants_received_attention(self, layer: int) -> bool:
        return False

    def after_layer(self, layer: int, state: State) -> State:
        return state
