"""Run a function in several CPU processes under accelerate (gloo), for the 1-vs-N-process tests.

Like ``accelerate.debug_launcher``, but with the ``spawn`` start method: forking a pytest process whose OpenMP
thread pool is already running can deadlock the children.
"""

import socket
import tempfile

from accelerate.utils import PrepareForLaunch, patch_environment
from torch.multiprocessing import start_processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(function, args=(), num_processes: int = 2) -> None:
    """Call ``function(*args)`` in ``num_processes`` processes; ``function`` must be importable (module level)."""
    with (
        tempfile.NamedTemporaryFile() as rendezvous,
        patch_environment(
            world_size=num_processes,
            master_addr="127.0.0.1",
            master_port=str(_free_port()),
            accelerate_mixed_precision="no",
            accelerate_debug_rdv_file=rendezvous.name,
            accelerate_use_cpu="yes",
            gloo_socket_ifname="lo",
        ),
    ):
        start_processes(
            PrepareForLaunch(function, debug=True), args=args, nprocs=num_processes, start_method="spawn"
        )
