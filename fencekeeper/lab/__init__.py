"""The partition lab: real node processes and a real storage service behind fault-injecting proxies."""
