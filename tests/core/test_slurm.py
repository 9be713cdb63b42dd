"""A sweep through submitit on a real one-node SLURM cluster (Debian's packages).

The cluster is started here as in research/slurm_local.md; without root or
without the slurm packages the test is skipped (``.ci/run`` installs them).
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from napari_peft_sam.cli import main
from napari_peft_sam.core import results

CONF = """ClusterName=peftsam
SlurmctldHost={host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
NodeName={host} CPUs={cpus} RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _sinfo_idle() -> bool:
    """The node answers and is free ('idle*' is a node that stopped responding)."""
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    states = out.stdout.split()
    return (
        out.returncode == 0 and "idle" in states and not any("*" in s for s in states)
    )


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("needs root and Debian's slurmctld/slurmd/munge packages")
    for folder in (
        "/etc/slurm",
        "/var/spool/slurmctld",
        "/var/spool/slurmd",
        "/var/log/slurm",
        "/run/munge",
    ):
        Path(folder).mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    Path("/etc/slurm/slurm.conf").write_text(
        CONF.format(host=socket.gethostname(), cpus=os.cpu_count())
    )
    started = []
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode:
        subprocess.run(
            ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], check=True
        )
    for daemon in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd"):
        name = Path(daemon).name
        if subprocess.run(["pgrep", "-x", name], capture_output=True).returncode:
            subprocess.run([daemon], check=True)
            started.append(daemon)
    deadline = time.monotonic() + 60
    while not _sinfo_idle():
        if time.monotonic() > deadline:
            pytest.skip("the SLURM cluster did not come up")
        time.sleep(1)
    yield
    subprocess.run(
        ["scancel", "--user", "root"], capture_output=True
    )  # nothing outlives us
    if started:
        subprocess.run(["scontrol", "shutdown"], capture_output=True)


def test_sweep_through_slurm_completes_and_reports(slurm_cluster, tmp_path, capsys):
    spec = {
        "name": "slurm",
        "dataset": "organoids",
        "model": "tiny",
        "method": "lora",
        "grid": {"rank": [1, 2]},
        "fixed": {
            "lr": 1e-3,
            "iterations": 2,
            "n_objects": 2,
            "n_sub_iterations": 1,
            "val_interval": 2,
            "device": "cpu",
        },
        "metrics": ["single box"],
        "eval_split": "val",
        "eval_images": 1,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    storage = str(tmp_path / "results.journal")
    argv = [
        "sweep",
        "--config",
        str(tmp_path / "spec.yaml"),
        "--storage",
        storage,
        "--runs",
        str(tmp_path / "runs"),
        "--executor",
        "slurm",
        "--workers",
        "1",
        "--gpus",
        "0",
        "--cpus",
        "1",
        "--mem",
        "2",
        "--time",
        "15",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "| rank | single box |" in out.replace("  ", " ").replace("  ", " ")
        or "rank" in out
    )
    rows = results.rows(storage, ["slurm"])
    assert [r["status"] for r in rows] == ["complete", "complete"]
    jobs = list((tmp_path / "runs" / "jobs").iterdir())
    assert jobs and all(
        j.name.isdigit() or "_" in j.name for j in jobs
    )  # SLURM job ids
