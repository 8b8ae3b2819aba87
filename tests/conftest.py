"""Suite-wide settings.

The tests evaluate many small tensors; on a 2-core machine torch's intra-op thread pool costs
more than it saves there (10-30x slower small calls under load), so the suite runs on one
thread. Library code never changes the thread count.
"""

import torch

torch.set_num_threads(1)
