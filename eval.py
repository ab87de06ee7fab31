"""Evaluate a checkpoint and record: python eval.py ckpt_path=PATH mechanism.exit.threshold=0.8"""
import sys

import hydra
from omegaconf import DictConfig

from eat.config import register_configs
from eat.errors import exit_on_user_error

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        from eat.preflight import preflight

        preflight(cfg)  # config values and data files before torch is imported: seconds, not minutes
        from eat.runner import run

        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
