"""Lightning's WandbLogger without the deprecated `anonymous` setting.

Lightning 2.6 always passes `anonymous=None` to `wandb.init`, and wandb >= 0.19 warns on every run that the
setting "has no effect and will be removed". Same class name, so code that checks for a WandbLogger by name
keeps working."""
from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
