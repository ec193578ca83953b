"""Control of the servers the project runs on loopback: tritonserver, a single-node OpenSearch and
an OpenSearch cluster.

Stdlib only, so any python3 can drive it. Modules:

- `proc`: free loopback ports, pid checks, bounded stops and readiness waits, log tails and
  the state file the command line keeps; only processes we started are signalled, by pid;
- `triton`: the tritonserver of the nvidia-pytriton wheel (`TritonServer`, backend install);
- `opensearch`: an OpenSearch node with k-NN (`OpenSearchNode`);
- `opensearch_cluster`: several such nodes forming one cluster (`OpenSearchCluster`);
- `__main__`: the command line,
  `python3 scripts/serverctl {triton,opensearch,opensearch-cluster,wait-http} ...`.

The shell scripts call the command line; tests and benchmarks put scripts/ on sys.path and
import the modules (`from serverctl.triton import TritonServer`).
"""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
