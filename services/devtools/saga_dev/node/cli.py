"""`saga-node`: the cluster tier's single-node Kubernetes, by hand.

saga-node build      build every part (cold: about 30 minutes, downloads included; then cached) and the images
saga-node up         start the node (builds first if needed); prints the KUBECONFIG to export
saga-node status     which parts run, and the node's condition
saga-node down       stop everything and clean up (processes, mounts, namespaces)
saga-node env        `export KUBECONFIG=...` and a PATH with the node's kubectl and helm
saga-node update P   regenerate the wrapper module of part P (go.mod, go.sum) after its version in parts.py changed
"""

from __future__ import annotations

import argparse
import sys
import time

from saga_dev.node import build, images
from saga_dev.node.node import Node, NodeError
from saga_dev.node.parts import PARTS


def log(line: str) -> None:
    print(f"[node] {line}", flush=True)


def node_images() -> list[images.Archive]:
    """What every node runs, whatever is installed on it: the sandbox and the volume helper."""
    return [images.pause_image(), images.helper_image()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="saga-node", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["build", "up", "status", "down", "env", "update"])
    parser.add_argument("part", nargs="?", choices=sorted(PARTS), help="the part `update` regenerates")
    args = parser.parse_args(argv)
    node = Node.default()
    try:
        match args.command:
            case "build":
                started = time.monotonic()
                build.build_all(log)
                node_images()
                log(f"everything built in {time.monotonic() - started:.0f} s (binaries in {build.CACHE / 'bin'})")
            case "up":
                build.build_all(log)
                node.up(node_images(), log)
                print(f"export KUBECONFIG={node.kubeconfig}")
            case "status":
                running = node.running()
                print(f"running: {', '.join(running) or 'nothing'}")
                if node.is_up():
                    print(node.kubectl("get", "nodes", "-o", "wide"))
            case "down":
                node.down(log)
            case "update":
                if args.part is None:
                    parser.error("update needs the part whose module to regenerate")
                build.update_module(PARTS[args.part], log)
                log(f"k8s/node/modules/{args.part} regenerated; `saga-node build` builds the new version")
            case "env":
                print(f"export KUBECONFIG={node.kubeconfig}")
                print(f"export PATH={build.binary('kubectl').parent}:{build.binary('helm').parent}:$PATH")
    except (NodeError, RuntimeError) as exc:
        print(f"saga-node {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
