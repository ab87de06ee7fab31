"""What train.py and eval.py run once Hydra has composed their config (conf/train.yaml, conf/eval.yaml).

Each script keeps its own `@hydra.main` (Hydra names the job, its log file and its --help after the file that
declares the task function, and resolves `config_path=conf` next to it) and hands the config to `run_job`.
Importing this module registers the structured configs, as the scripts did before Hydra composes.
"""
from omegaconf import DictConfig

from eat.config import register_configs
from eat.errors import exit_on_user_error

register_configs()


def run_job(cfg: DictConfig) -> None:
    """Validate the config and the data files (seconds: before a model, tokenizer or dataset is loaded), then
    fit / evaluate and record (eat.runner.run). A user error ends the process with one line and exit code 2
    (eat.errors)."""
    with exit_on_user_error():
        from eat.preflight import preflight

        preflight(cfg)
        from eat.runner import run

        run(cfg)
