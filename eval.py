"""Evaluate a checkpoint and record: python eval.py ckpt_path=PATH mechanism.exit.threshold=0.8"""
import sys

import hydra

from eat.cli import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg) -> None:
    run_job(cfg)


if __name__ == "__main__":
    sys.exit(main())
