"""fencekeeper side by side with etcd's and ZooKeeper's election recipes: `python -m bench.peers`."""
