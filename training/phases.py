"""Several training phases from one config file, each starting from the adapter the one
before it wrote (v3's recipe: MNTP and MSG, then SSCL, then graded pairs).

A config file with a `phases` list is a recipe:

    {"max_length": 96, "lora_r": 32, ...,                       <- every phase's settings
     "phases": [{"name": "fill", "max_steps": 1200, "weights_before": [1, 0, 3], ...},
                {"name": "sscl", "max_steps": 120, "weights_before": [1, 6, 3], ...}]}

Each phase is the file's settings with its own on top, and the command's flags over both (a
flag is meant for the whole run: `--max-steps 5` makes every phase 5 steps). It writes
to OUTPUT/NAME, and its `init_adapter` is the previous phase's adapter (the first phase's is
the file's or --init-adapter, usually none). Running the recipe again finishes it: a phase
whose adapter is written is done and skipped, one with checkpoints resumes from the latest.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from magnet.training.checkpoints import latest_checkpoint
from magnet.training.config import TrainConfig

log = logging.getLogger(__name__)

PHASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a folder name under --output
SET_BY_THE_RECIPE = ("output",)  # OUTPUT/NAME; init_adapter may be given to a phase (a fork)


@dataclass(frozen=True)
class Phase:
    name: str
    config: TrainConfig

    @property
    def adapter(self) -> Path:
        return Path(self.config.output) / "adapter"

    @property
    def done(self) -> bool:
        # the adapter is published in one rename at a phase's end (training/checkpoints.py)
        return (self.adapter / "adapter_model.safetensors").is_file()


def phase_list(base: TrainConfig, raw_phases, flags: dict | None = None) -> list[Phase]:
    """The phases of a recipe, each a complete config; a bad phase is refused by position.
    `flags`: the settings given on the command line, which win over a phase's own (but for
    the output and the adapter each phase starts from, which the recipe sets per phase)."""
    flags = {k: v for k, v in (flags or {}).items() if k not in (*SET_BY_THE_RECIPE, "init_adapter")}
    if not isinstance(raw_phases, list) or not raw_phases:
        raise ValueError("phases must be a non-empty list of objects, one per phase")
    phases, previous = [], base.init_adapter
    for i, raw in enumerate(raw_phases):
        where = f"phases[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be an object of training settings with a name")
        name = raw.get("name")
        if not isinstance(name, str) or not PHASE_NAME.match(name):
            raise ValueError(f"{where} needs a name that is a folder name (letters, digits, '.', '_', '-'), "
                             f"got {name!r}")
        if name in {p.name for p in phases}:
            raise ValueError(f"{where}: the name {name!r} is taken by an earlier phase")
        fixed = [key for key in SET_BY_THE_RECIPE if key in raw]
        if fixed:
            raise ValueError(f"{where} ({name}): {', '.join(fixed)} is set by the recipe (--output/{name})")
        settings = {k: v for k, v in raw.items() if k != "name"}
        for key in sorted(set(settings) & set(flags)):
            log.info("phase %s: %s %r from the command line, not the recipe's %r", name, key, flags[key], settings[key])
        try:
            config = TrainConfig.from_dict({**asdict(base), "init_adapter": previous, **settings, **flags,
                                            "output": str(Path(base.output) / name)})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where} ({name}): {exc}") from None
        phases.append(Phase(name, config))
        previous = str(phases[-1].adapter)
    return phases


def run_phases(phases: list[Phase], progress: bool = True, stop_after: int | None = None) -> Path | None:
    """Train the phases not yet done, in order; the last adapter, or None when `stop_after`
    steps ended a phase early (run the recipe again to go on)."""
    from magnet.training.loop import train

    for phase in phases:
        if phase.done:
            log.info("phase %s: done (%s)", phase.name, phase.adapter)
            continue
        resume = latest_checkpoint(Path(phase.config.output)) is not None
        log.info("phase %s: %s", phase.name, "resuming" if resume else "starting")
        train(phase.config, resume=resume, progress=progress, stop_after=stop_after)
        if not phase.done:  # stopped after `stop_after` steps (in every process of a data-parallel run)
            return None
    return phases[-1].adapter
