"""Run a function in several CPU processes under accelerate (gloo), for the 1-vs-N-process tests.

Like ``accelerate.debug_launcher``, but with the ``spawn`` start method: forking a pytest process whose OpenMP
thread pool is already running can deadlock the children. Every process ends with a barrier and
``destroy_process_group``: a process that exits while gloo still holds its peer can abort in C++ ("terminate
called without an active exception").
"""

import functools
import socket
import tempfile

import torch.distributed as dist
from accelerate.utils import PrepareForLaunch, patch_environment
from torch.multiprocessing import start_processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call_then_tear_down(function, *args) -> None:
    function(*args)  # on an error the process exits at once (a barrier would wait for peers that never come)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(function, args=(), num_processes: int = 2) -> None:
    """Call ``function(*args)`` in ``num_processes`` processes; ``function`` must be importable (module level)."""
    with (
        tempfile.TemporaryDirectory() as rendezvous_dir,  # gloo's FileStore deletes the file when it closes
        patch_environment(
            world_size=num_processes,
            master_addr="127.0.0.1",
            master_port=str(_free_port()),
            accelerate_mixed_precision="no",
            accelerate_debug_rdv_file=f"{rendezvous_dir}/rendezvous",
            accelerate_use_cpu="yes",
            gloo_socket_ifname="lo",
        ),
    ):
        start_processes(
            PrepareForLaunch(functools.partial(_call_then_tear_down, function), debug=True),
            args=args,
            nprocs=num_processes,
            start_method="spawn",
        )
