"""Fit, evaluate and record: python train.py task=sst2 model=minilm_l6 mechanism=none"""
import sys

import hydra

from eat.cli import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg) -> None:
    run_job(cfg)


if __name__ == "__main__":
    sys.exit(main())
