"""A real single-node Kubernetes on this machine, built from Go modules, for the cluster tier (`saga-node`).

parts.py names every part and its version (one Kubernetes release, in one place); build.py builds them from the
wrapper modules under k8s/node/modules and caches the binaries by version; images.py makes the images the node
runs without a registry; node.py starts and stops the node in a network namespace of its own; cli.py is
`saga-node`.
"""
