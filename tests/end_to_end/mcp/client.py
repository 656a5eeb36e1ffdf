"""A client of the official MCP Python SDK that calls the `count` tool
through the proxy, drops its connection after 10 notifications, and
resumes the call with its resumption token, on a new connection of the same
session. Prints, as JSON, the notifications and the result the call got.

Usage: python3 client.py URL [TIMEOUT_SECS]

A resumed call that gets no result within TIMEOUT_SECS (20 by default)
prints `"result": null` and what it got. A first connection that does not
initialize, or does not get its 10 notifications, within STEP_SECS fails
with `TimeoutError`: the test never waits on the SDK without a bound.
"""

import asyncio
import json
import sys
from datetime import timedelta

import anyio
from mcp import ClientSession, types
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.message import ClientMessageMetadata

CALLS = 30
CUT_AFTER = 10
# The bound on each wait of the first connection.
STEP_SECS = 30


async def main(url: str, timeout: float) -> None:
    got: list[str] = []
    token: str | None = None
    session_id: str | None = None
    enough = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        got.append(str(params.data))
        if len(got) >= CUT_AFTER:
            enough.set()

    async def on_token(new: str) -> None:
        nonlocal token
        token = new

    call = types.ClientRequest(
        types.CallToolRequest(
            method="tools/call",
            params=types.CallToolRequestParams(name="count", arguments={"n": CALLS}),
        )
    )

    # First connection: the call starts, and the connection is dropped
    # after 10 notifications, the session kept.
    async with streamablehttp_client(url, terminate_on_close=False) as (read, write, get_id):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            with anyio.fail_after(STEP_SECS):
                await session.initialize()
            session_id = get_id()
            async with anyio.create_task_group() as group:

                async def run_call() -> None:
                    await session.send_request(
                        call,
                        types.CallToolResult,
                        metadata=ClientMessageMetadata(on_resumption_token_update=on_token),
                    )

                group.start_soon(run_call)
                with anyio.fail_after(STEP_SECS):
                    await enough.wait()
                group.cancel_scope.cancel()

    # Second connection: the same session resumes the call from its token.
    cut_at = len(got)
    headers = {"mcp-session-id": session_id}
    text = None
    with anyio.move_on_after(timeout):
        async with streamablehttp_client(url, headers=headers) as (read, write, _):
            async with ClientSession(read, write, logging_callback=on_log) as session:
                result = await session.send_request(
                    call,
                    types.CallToolResult,
                    request_read_timeout_seconds=timedelta(seconds=timeout),
                    metadata=ClientMessageMetadata(resumption_token=token, on_resumption_token_update=on_token),
                )
                text = [block.text for block in result.content if block.type == "text"]
    print(json.dumps({"notifications": got, "cut_at": cut_at, "token": token, "result": text}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 20.0))
