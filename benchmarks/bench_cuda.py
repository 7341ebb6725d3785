"""droplab's dropout on a CUDA GPU against PyTorch's and a device copy.

Run by hand on a machine with an NVIDIA GPU (not collected by pytest):
``python benchmarks/bench_cuda.py --json bench-cuda.json``. The same as
``droplab bench --device cuda``, which takes the same options: sizes 2^20 ..
2^28 in float32, bfloat16 and float16 (forward and forward+backward, as ms, GB/s,
torch/droplab and % of copy bandwidth), bytes saved for backward, MC dropout on a
replicated batch, the compiled path, and a CUDA-graph replay of a training step.
What each figure means: docs/performance.md, "GPU".
"""

from __future__ import annotations

import sys

from droplab import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--device", "cuda", *sys.argv[1:]]))
