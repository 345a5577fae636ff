"""What the GPU checks run inside instances: shared by tests/gpu and scripts/gpu_check.py."""

# An 8192² matrix product in a loop for argv[1] seconds: the GPU near 100 % busy.
MATMUL = """
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda")
end = time.time() + float(sys.argv[1])
while time.time() < end:
    b = a @ a
    torch.cuda.synchronize()
"""
# Prints the CUDA devices the process sees: their count and the first one's UUID (None for none).
# Callers put it in a shell command line: shlex.quote it.
VISIBLE = ("import torch; n = torch.cuda.device_count(); "
           "print(n, torch.cuda.get_device_properties(0).uuid if n else None)")
