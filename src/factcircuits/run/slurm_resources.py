"""What each Slurm job of a sweep asks for: flags over a config file over defaults, checked
before anything is submitted, and whether this machine can talk to a Slurm at all.

The config file holds the cluster's names once (YAML; `--slurm-config FILE`, else
$FACTCIRCUITS_SLURM_CONFIG, else `factcircuits-slurm.yaml` at the project root):

    partition: gpu          # sbatch --partition
    gpus: 1                 # GPUs per job (--gpus-per-node)
    cpus: 8                 # CPUs per job (--cpus-per-task); also the job's torch threads
    mem: 64G                # memory per job (--mem)
    time: "4:00:00"         # time limit per job: minutes or [D-]HH:MM:SS
    parallel: 8             # at most this many jobs of the array at once
    account: my-project     # optional: --account, --qos, --constraint
    sbatch: ["--gres=gpu:a100:1", "--mail-type=END"]   # any other sbatch options
    setup: ["module load cuda/12.4"]                   # shell lines run before each job
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from factcircuits.errors import UserError

CONFIG_NAME = "factcircuits-slurm.yaml"
# Commands the executor runs: submission, state, cancellation, the job step, partitions.
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "srun", "sinfo")
SLURM_TIMEOUT_S = 20


@dataclass
class SlurmResources:
    partition: str | None = None
    gpus: int = 0
    cpus: int = 2
    mem: str = "16G"
    time: str = "2:00:00"
    parallel: int = 16
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"partition={self.partition or '(default)'}", f"gpus={self.gpus}",
                 f"cpus={self.cpus}", f"mem={self.mem}", f"time={self.time}",
                 f"parallel={self.parallel}"]
        return " ".join(parts + list(self.sbatch))

    def submitit_parameters(self, job_name: str) -> dict[str, Any]:
        """Parameters for `submitit.AutoExecutor.update_parameters`."""
        minutes = parse_time_minutes(self.time, "time")
        extra = parse_sbatch_options(self.sbatch)
        # submitit asks Slurm for USR2 before the limit to requeue checkpointable jobs; Slurm
        # sends it to every process of the step, and the notebook kernel dies of it. Runs are
        # not checkpointable: ask for SIGURG instead (ignored by default), which the job only
        # records as "time limit near".
        extra.setdefault("signal", f"URG@{min(120, max(10, minutes * 6))}")
        params: dict[str, Any] = {
            "name": job_name, "timeout_min": minutes, "cpus_per_task": self.cpus,
            "slurm_mem": self.mem, "slurm_array_parallelism": self.parallel,
            "slurm_additional_parameters": extra,
        }
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                params[f"slurm_{key}"] = getattr(self, key)
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        return params


# ------------------------------------------------------------------ parsing and checking
def parse_time_minutes(value: Any, name: str = "time") -> int:
    """Slurm's time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) or 90m / 2h / 1d →
    whole minutes (Slurm's own resolution), at least 1."""
    text = str(value).strip().lower()
    unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhd])", text)
    if unit:
        minutes = float(unit[1]) * {"m": 1, "h": 60, "d": 1440}[unit[2]]
    else:
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not match:
            raise UserError(f"--{name} {value!r}: use minutes or [D-]HH:MM:SS, e.g. 2:00:00")
        days, a, b, c = (int(x) if x else None for x in match.groups())
        if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
            seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
        elif c is not None:  # HH:MM:SS
            seconds = a * 3600 + b * 60 + c
        elif b is not None:  # MM:SS
            seconds = a * 60 + b
        else:  # minutes
            seconds = a * 60
        minutes = seconds / 60
    if minutes <= 0:
        raise UserError(f"--{name} {value!r}: must be more than zero")
    return max(1, math.ceil(minutes))


def normalize_mem(value: Any) -> str:
    """'16G', '16GB', '1500M', 16 (GiB) → Slurm's form ('16G', '1500M')."""
    text = str(value).strip().upper()
    match = re.fullmatch(r"(\d+)\s*([KMGT])?(?:I?B)?", text)
    if not match:
        raise UserError(f"--mem {value!r}: use a size like 16G or 1500M")
    return f"{match[1]}{match[2] or 'G'}"


def parse_sbatch_options(options: list[str]) -> dict[str, Any]:
    """['--mail-type=END', '--exclusive'] → {'mail-type': 'END', 'exclusive': True}."""
    parsed: dict[str, Any] = {}
    for option in options:
        text = str(option).strip()
        if not text.startswith("--") or len(text) < 3:
            raise UserError(f"--sbatch {option!r}: give sbatch's long form, e.g. "
                            "--sbatch=--mail-type=END")
        key, sep, value = text[2:].partition("=")
        parsed[key] = value if sep else True
    return parsed


def _check(res: SlurmResources) -> SlurmResources:
    for name in ("gpus", "cpus", "parallel"):
        value = getattr(res, name)
        low = 0 if name == "gpus" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"--{name} {value!r}: must be a whole number >= {low}")
    res.mem = normalize_mem(res.mem)
    minutes = parse_time_minutes(res.time)
    res.time = (f"{minutes // 1440}-" if minutes >= 1440 else "") + \
        f"{minutes % 1440 // 60}:{minutes % 60:02d}:00"
    parse_sbatch_options(res.sbatch)
    if not all(isinstance(line, str) for line in res.setup):
        raise UserError("slurm config: setup must be a list of shell lines")
    return res


def config_path(explicit: str | Path | None) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"--slurm-config {explicit}: no such file")
        return path
    if os.environ.get("FACTCIRCUITS_SLURM_CONFIG"):
        path = Path(os.environ["FACTCIRCUITS_SLURM_CONFIG"]).expanduser()
        if not path.is_file():
            raise UserError(f"FACTCIRCUITS_SLURM_CONFIG={path}: no such file")
        return path
    from factcircuits.run.folders import project_root

    path = project_root() / CONFIG_NAME
    return path if path.is_file() else None


def load_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"slurm config {path}: not valid YAML "
                        f"({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"slurm config {path}: expected a mapping like `partition: gpu`")
    known = [f.name for f in fields(SlurmResources)]
    for key in data:
        if key not in known:
            raise UserError(f"slurm config {path}: unknown key {key!r}; known: "
                            f"{', '.join(known)}")
    for key in ("sbatch", "setup"):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    return data


def resolve_resources(flags: dict[str, Any], config_file: str | Path | None = None,
                      base: dict[str, Any] | None = None) -> SlurmResources:
    """Flags (None = not given) over the config file (or `base`: what a resumed sweep asked
    for) over the defaults; `sbatch` options add up (flags last, so a flag wins in sbatch)."""
    merged = dict(base) if base is not None else load_config(config_path(config_file))
    for key, value in flags.items():
        if value is None or value == []:
            continue
        merged[key] = list(merged.get(key) or []) + list(value) if key == "sbatch" else value
    return _check(SlurmResources(**merged))


# ------------------------------------------------------------------ the Slurm on this machine
def run_slurm(args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run a Slurm client command; a one-line error if Slurm does not answer in time."""
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False,
                              timeout=SLURM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"{what}: Slurm did not answer `{args[0]}` within {SLURM_TIMEOUT_S} s; "
                        "is slurmctld running (`scontrol ping`)?") from None


def require_slurm() -> dict[str, str]:
    """The cluster's partitions and their time limits; a one-line error naming what is
    missing when there is no Slurm here."""
    missing = [cmd for cmd in SLURM_COMMANDS if shutil.which(cmd) is None]
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""
        raise UserError(f"--executor slurm: `{missing[0]}` is not on PATH{also}: no Slurm on "
                        "this machine; run on the cluster's login node, or start a local one "
                        "with scripts/slurm_local.sh")
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        raise UserError(f"--executor slurm: SLURM_CONF={conf} does not exist; unset it or "
                        "point it at the cluster's slurm.conf")
    proc = run_slurm(["sinfo", "--noheader", "--format=%R|%l"], "--executor slurm")
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise UserError(f"--executor slurm: Slurm does not answer (`sinfo`: {first})")
    lines = (line.strip().partition("|") for line in proc.stdout.splitlines() if line.strip())
    return {name: limit for name, _, limit in sorted(lines)}


def check_partition(resources: SlurmResources, partitions: dict[str, str]) -> None:
    """An unknown partition, or a time limit above the partition's (Slurm would accept the
    jobs and leave them pending for ever), is a one-line error before submitting."""
    name = resources.partition
    if name and partitions and name not in partitions:
        raise UserError(f"--partition {name}: no such partition on this cluster; "
                        f"available: {', '.join(partitions)}")
    limit = partitions.get(name or "") if name else None
    if limit and limit not in ("infinite", "n/a"):
        try:
            most = parse_time_minutes(limit)
        except UserError:
            return
        if parse_time_minutes(resources.time) > most:
            raise UserError(f"--time {resources.time}: partition {name} allows at most "
                            f"{limit}; ask for less time or another partition")
