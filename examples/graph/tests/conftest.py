"""The example's modules live one folder up (examples/graph); one thread, as the scripts use."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nsa  # noqa: E402

torch.set_num_threads(1)
nsa.set_num_threads(1)
