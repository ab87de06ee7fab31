import warnings

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecates, once per evaluation: a
# third-party FutureWarning a user can do nothing about. Silenced here (and in pytest's settings).
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
