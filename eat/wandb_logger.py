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


def finish() -> None:
    """End this process's W&B run with its file complete. wandb >= 0.2x writes an offline run through its
    service process, which may still be flushing when finish() returns (seen on a loaded 2-core machine: the
    history records arrived seconds later); teardown() stops the service once everything is written, and the
    next run starts a fresh one."""
    import wandb

    wandb.finish()
    wandb.teardown()


def read_offline_run(path: str) -> dict:
    """What an offline run's `run-*.wandb` file holds, read back without the network: {"history": {key: value},
    "config": {key: value}, "summary": {key: value}} (values decoded from JSON; later records win).

    wandb 0.31 has no Python reader for this file (the one `wandb sync` uses is in its Go core), but the format
    is W&B's documented transaction log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
    chunks (CRC32, little-endian 2-byte length, type: 1 full, 2 first, 3 middle, 4 last), each whole record a
    `wandb.proto.wandb_internal_pb2.Record`."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    block, header = 32768, 7
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (header {raw[:4]!r})")
    out = {"history": {}, "config": {}, "summary": {}}
    pos, pending = header, b""
    while pos + header <= len(raw):
        left = block - pos % block
        if left < header:  # block trailer: too small for a chunk header
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + header])
        chunk = raw[pos + header:pos + header + length]
        pos += header + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind not in (1, 4):
            continue
        rec = pb.Record()
        rec.ParseFromString(pending)
        pending = b""
        which = rec.WhichOneof("record_type")
        items = {"history": lambda: rec.history.item, "config": lambda: rec.config.update,
                 "summary": lambda: rec.summary.update}.get(which)
        for it in (items() if items else []):
            key = it.key or "/".join(it.nested_key)
            try:
                out[which][key] = json.loads(it.value_json)
            except ValueError:
                out[which][key] = it.value_json
    return out
