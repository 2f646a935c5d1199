"""The long option names sbatch and srun accept, and the check that `slurm.sbatch` and
`slurm.srun` name only those (or the site's own, listed in `slurm.site_options`).

sbatch rejects a whole script for one unknown `#SBATCH --name` at submit time, long after the
compile; this check moves that failure to the compile, with the key's position and a hint.

Source: the OPTIONS sections of sbatch(1) and srun(1) of SLURM 22.05.8 (the man pages installed
on the test cluster; `sbatch --help` adds `--distribution`), plus the options that SLURM's
release notes and man pages add in 23.02 to 24.11 (`NEWER`). Names are written with dashes;
config keys may use underscores, which the renderer turns into dashes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .errors import Origin, Problem, did_you_mean
from .tree import KeyPath, origin_of


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# sbatch(1), SLURM 22.05.8.
SBATCH_22_05: frozenset[str] = _names(
    """
    account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment
    constraint container contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu
    cpus-per-task deadline delay-boot dependency distribution error exclude exclusive export
    export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus gpus-per-node
    gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs input job-name
    kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu
    mem-per-gpu mincpus network nice no-kill no-requeue nodefile nodelist nodes ntasks
    ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket open-mode output
    overcommit oversubscribe parsable partition power prefer priority profile propagate qos
    quiet reboot requeue reservation signal sockets-per-node spread-job switches test-only
    thread-spec threads-per-core time time-min tmp uid usage use-min-nodes verbose version
    wait wait-all-nodes wckey wrap
    """
)

# srun(1), SLURM 22.05.8.
SRUN_22_05: frozenset[str] = _names(
    """
    accel-bind account acctg-freq bb bbf bcast bcast-exclude begin chdir cluster-constraint
    clusters comment compress constraint container contiguous core-spec cores-per-socket
    cpu-bind cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
    disable-status distribution epilog error exact exclude exclusive export extra-node-info
    gid gpu-bind gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags
    help het-group hint hold immediate input job-name jobid kill-on-bad-exit label licenses
    mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus mpi
    msg-timeout multi-prog network nice no-allocate no-kill nodefile nodelist nodes ntasks
    ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket open-mode output
    overcommit overlap oversubscribe partition power prefer preserve-env priority profile
    prolog propagate pty qos quiet quit-on-interrupt reboot relative reservation resv-ports
    send-libs signal slurmd-debug sockets-per-node spread-job switches task-epilog
    task-prolog test-only thread-spec threads threads-per-core time time-min tmp uid
    unbuffered usage use-min-nodes verbose version wait wckey x11
    """
)

# Added after 22.05: option -> the release that documents it first.
NEWER_SBATCH: dict[str, str] = {
    "extra": "23.02",
    "tres-per-task": "23.02",
    "container-id": "23.11",
    "tres-bind": "23.11",
    "resv-ports": "23.11",
    "stepmgr": "24.05",
    "oom-kill-step": "24.11",
    "segment": "24.11",
}
NEWER_SRUN: dict[str, str] = {
    "extra": "23.02",
    "tres-per-task": "23.02",
    "container-id": "23.11",
    "tres-bind": "23.11",
    "external-launcher": "24.05",
    "oom-kill-step": "24.11",
    "segment": "24.11",
}

# Undocumented spellings both commands still accept (checked with sbatch --test-only, 22.05).
ALIASES: frozenset[str] = frozenset({"tasks-per-node"})

SBATCH: frozenset[str] = SBATCH_22_05 | set(NEWER_SBATCH) | ALIASES
SRUN: frozenset[str] = SRUN_22_05 | set(NEWER_SRUN) | ALIASES

# Options that exist but break a compiled script or the reconciler that submits it: they change
# what sbatch prints (the job id is read from it), make it block, or make it submit nothing.
REFUSED: dict[str, dict[str, str]] = {
    "sbatch": {
        "parsable": "it changes the answer of sbatch, from which the reconciler reads the job id",
        "test-only": "sbatch would only test the script and never submit it",
        "wait": "sbatch would block the reconciler until the job ends",
        "wrap": "the script is the job; --wrap would replace it",
        "help": "sbatch would print its help and submit nothing",
        "usage": "sbatch would print its usage and submit nothing",
        "version": "sbatch would print its version and submit nothing",
    },
    "srun": {
        "test-only": "srun would only test the step and never run it",
        "help": "srun would print its help and run nothing",
        "usage": "srun would print its usage and run nothing",
        "version": "srun would print its version and run nothing",
    },
}

KNOWN: dict[str, frozenset[str]] = {"sbatch": SBATCH, "srun": SRUN}


def option_name(key: str) -> str:
    """A config key as the option it renders to (`cpus_per_task` -> `cpus-per-task`)."""
    return key.replace("_", "-")


def check_slurm_options(
    slurm: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """One problem per unknown or refused option name under `slurm.sbatch` and `slurm.srun`."""
    site = slurm.get("site_options") or {}
    for command in ("sbatch", "srun"):
        options = slurm.get(command) or {}
        allowed = {option_name(str(name)) for name in site.get(command) or ()}
        other = "srun" if command == "sbatch" else "sbatch"
        for key in options:
            name = option_name(key)
            path: KeyPath = ("slurm", command, key)
            if name in REFUSED[command]:
                yield Problem(
                    f"--{name} cannot be set here: {REFUSED[command][name]}",
                    origin_of(origins, path),
                    key=f"slurm.{command}",
                )
            elif name not in KNOWN[command] and name not in allowed:
                yield Problem(
                    f"{command} has no option --{name}",
                    origin_of(origins, path),
                    key=f"slurm.{command}",
                    hint=_hint(name, command, other),
                )


def _hint(name: str, command: str, other: str) -> str:
    site = f"list it in slurm.site_options.{command} if your site adds --{name}"
    if name in KNOWN[other]:
        # Checked first: `cpu-bind` under sbatch is close to `gpu-bind`, but meant for srun.
        return f"--{name} is an {other} option: set it under slurm.{other}, or {site}"
    return did_you_mean(name, KNOWN[command]) or site
