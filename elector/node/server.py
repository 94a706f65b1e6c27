"""The node's HTTP API: the peer endpoint for the protocol and the local API for programs and people."""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from elector.node import wire
from elector.node.runtime import Node

NODE = web.AppKey("node", Node)
PROBLEM = "application/problem+json"


def problem(status: int, kind: str, detail: str, **extra: object) -> web.Response:
    body = {"type": f"urn:fencekeeper:problem:{kind}", "title": kind.replace("-", " "), "status": status}
    body |= {"detail": detail, **extra}
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=PROBLEM)


def _group(request: web.Request) -> str | web.Response:
    group = request.match_info["group"]
    if group not in request.app[NODE].groups:
        return problem(404, "not-found", f"this node does not take part in group {group!r}")
    return group


async def peer(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.stopping:
        # Close the connection too: a peer's keep-alive connection that keeps bringing renewals would
        # otherwise hold the server's graceful shutdown open until its timeout.
        response = problem(503, "node-stopping", f"{node.id} is shutting down")
        response.force_close()
        return response
    try:
        body = await request.json()
        sender = body["from"]
        if not isinstance(sender, str) or sender not in {m.id for m in node.cluster.members}:
            raise wire.WireError(f"unknown sender {sender!r}")
        messages = [wire.decode(m) for m in body["messages"]]
    except (ValueError, KeyError, TypeError, wire.WireError) as exc:
        return problem(400, "invalid-request", f"not a peer message batch: {exc}")
    replies = await node.receive(sender, messages)
    return web.json_response({"messages": [wire.encode(m) for m in replies]})


async def leader(request: web.Request) -> web.Response:
    group = _group(request)
    if isinstance(group, web.Response):
        return group
    return web.json_response(request.app[NODE].leader_view(group))


async def token(request: web.Request) -> web.Response:
    group = _group(request)
    if isinstance(group, web.Response):
        return group
    node = request.app[NODE]
    lease = node.lease(group)
    if lease is None:
        view = node.leader_view(group)
        return problem(409, "not-leader", f"{node.id} does not lead {group}", leader=view["leader"])
    return web.json_response(
        {
            "group": group,
            "epoch": lease.epoch,
            "token": lease.token,
            "lease_remaining_ms": lease.remaining_ms(),
        }
    )


async def release(request: web.Request) -> web.Response:
    group = _group(request)
    if isinstance(group, web.Response):
        return group
    node = request.app[NODE]
    was_leader = await node.release(group, resume_after_ms=node.timing.lease_ms)
    return web.json_response({"group": group, "released": was_leader})


async def groups(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response({"node": node.id, "groups": [node.leader_view(g) for g in node.groups]})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[NODE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node": request.app[NODE].id})


def create_node_app(node: Node) -> web.Application:
    app = web.Application()
    app[NODE] = node

    async def lifecycle(app: web.Application):
        await node.start()
        yield
        await node.stop()

    async def hand_over(app: web.Application) -> None:
        # on_shutdown runs as soon as the listener closes, before the server waits for open connections:
        # the lease goes to the next leader now, not after that wait.
        await node.stop()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(hand_over)
    app.router.add_routes(
        [
            web.post("/v1/peer", peer),
            web.get("/v1/groups", groups, allow_head=False),
            web.get("/v1/groups/{group}/leader", leader, allow_head=False),
            web.get("/v1/groups/{group}/token", token, allow_head=False),
            web.post("/v1/groups/{group}/release", release),
            web.get("/metrics", metrics, allow_head=False),
            web.get("/healthz", healthz, allow_head=False),
        ]
    )
    return app
