"""The encoder (encoder.py), its in-flight state (state.py), HF checkpoint loading (hub.py), construction (build.py)."""
