"""
Operator tools: console scripts that run beside the product, never inside a
node (the local cluster launcher, the benchmark, the data-directory
inspector). Nothing in the product imports this package.
"""
