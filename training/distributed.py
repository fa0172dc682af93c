"""How a run uses the machine's processes and cores: what `accelerate launch` and DeepSpeed need that they do not
work out for themselves."""

import os

import torch


def cores_per_process(accelerator) -> int:
    """The cores this process may use, shared evenly among the processes `accelerate launch` started on this
    machine (at least one)."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    return max(1, len(os.sched_getaffinity(0)) // local_processes)


def set_cpu_threads(accelerator, requested: int | str | None = "auto") -> None:
    """Torch's thread count on a CPU process: `requested`, or with "auto" (None) this process's share of the cores.
    `accelerate launch` sets `OMP_NUM_THREADS=1` for every process, which would leave all but one core idle. Left
    alone on an accelerator."""
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cores_per_process(accelerator) if requested in (None, "auto") else int(requested))


def fill_deepspeed_batch_sizes(accelerator, micro_batch_size: int, args):
    """DeepSpeed's `"auto"` batch sizes are read by accelerate from the data loader's `batch_size`, which a batch
    sampler (or a stream) does not have: fill them from the run's own numbers."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    config = plugin.deepspeed_config
    per_device = micro_batch_size // accelerator.num_processes
    values = {
        "train_micro_batch_size_per_gpu": per_device,
        "train_batch_size": args.global_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "gradient_clipping": args.max_grad_norm or 0.0,
    }
    for name, value in values.items():
        if config.get(name, "auto") == "auto":
            config[name] = value
