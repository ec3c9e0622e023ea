"""Run halab's provider as ONE long-lived process that Terraform re-attaches to.

libvirt's ``test:///default`` driver keeps its objects in the memory of the process that opened it.
Terraform starts a fresh provider process for every plan/apply walk, so against the test driver
nothing would survive from one command to the next. Here the provider runs once, Terraform attaches
to it through ``TF_REATTACH_PROVIDERS`` (the go-plugin debug protocol, no TLS), and the test talks to
the same in-process test driver through stdin to simulate things done "outside Terraform"
(``virsh destroy``, ``virsh undefine``).

Protocol: the first stdout line is the TF_REATTACH_PROVIDERS JSON. Then each stdin line is a JSON
command ``{"op": "destroy"|"undefine"|"state"|"list", "domain": NAME}``; each answer is one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from concurrent import futures

import grpc
import libvirt
from halab_provider import SOURCE
from halab_provider.provider import LibvirtProvider, open_connection
from tf.gen import grpc_controller_pb2 as controller_pb
from tf.gen import grpc_controller_pb2_grpc as controller_rpc
from tf.gen import grpc_stdio_pb2_grpc as stdio_rpc
from tf.gen import tfplugin_pb2_grpc as rpc
from tf.provider import ProviderServicer


def _command(conn: libvirt.virConnect, cmd: dict) -> dict:
    op = cmd["op"]
    if op == "list":
        return {
            "domains": sorted(d.name() for d in conn.listAllDomains()),
            "networks": sorted(n.name() for n in conn.listAllNetworks()),
            "pools": sorted(p.name() for p in conn.listAllStoragePools()),
            "volumes": sorted(v for p in conn.listAllStoragePools() if p.isActive() for v in p.listVolumes()),
        }
    dom = conn.lookupByName(cmd["domain"])
    if op == "destroy":
        dom.destroy()
    elif op == "undefine":
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        return {"ok": True}
    return {"ok": True, "active": bool(dom.isActive())}


def main() -> None:
    uri = sys.argv[1] if len(sys.argv) > 1 else "test:///default"
    conn = open_connection(uri)  # held for the process lifetime: the test driver's state lives here
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    rpc.add_ProviderServicer_to_server(ProviderServicer(LibvirtProvider(uri=uri)), server)

    class Controller(controller_rpc.GRPCControllerServicer):
        def Shutdown(self, request, context):  # Terraform detaching: keep serving the next command
            return controller_pb.Empty()

    class Stdio(stdio_rpc.GRPCStdioServicer):
        def StreamStdio(self, request, context):
            return iter([])

    controller_rpc.add_GRPCControllerServicer_to_server(Controller(), server)
    stdio_rpc.add_GRPCStdioServicer_to_server(Stdio(), server)
    with tempfile.TemporaryDirectory(prefix="halab-tfdev-") as tmp:
        sock = os.path.join(tmp, "provider.sock")
        server.add_insecure_port(f"unix://{sock}")
        server.start()
        reattach = {
            SOURCE: {
                "Protocol": "grpc",
                "ProtocolVersion": 6,
                "Pid": os.getpid(),
                "Test": True,
                "Addr": {"Network": "unix", "String": sock},
            }
        }
        print(json.dumps(reattach), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                answer = _command(conn, json.loads(line))
            except Exception as exc:  # report to the test, keep serving
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
        server.stop(0)


if __name__ == "__main__":
    main()
