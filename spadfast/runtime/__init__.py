"""Runtime: devices and torchrun process groups, preemption signals, the run-folder lock, CPU features, NVTX ranges."""
