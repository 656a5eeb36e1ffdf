"""An MCP server of the official Python SDK, without an event store: it can
neither resume nor replay a stream. Its one tool, `count`, sends `n` log
notifications on the call's own stream, 50 ms apart, then its result.

Usage: python3 server.py PORT
"""

import asyncio
import sys

import uvicorn
from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("count", log_level="WARNING")


@server.tool()
async def count(n: int, ctx: Context) -> str:
    for i in range(1, n + 1):
        await ctx.info(f"notification {i}")
        await asyncio.sleep(0.05)
    return f"counted to {n}"


if __name__ == "__main__":
    port = int(sys.argv[1])
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")
