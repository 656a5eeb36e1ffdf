//! End to end over real sockets: a flaky upstream, the proxy with the layer,
//! and real clients (headless Chromium, `eventsource-client`, the MCP
//! Python SDK).

mod browser;
mod client_crate;
mod demo;
mod http2;
mod llm_gateway;
/// The LLM gateway recipe, whose `main` the tests leave alone.
#[allow(dead_code)]
#[path = "../../examples/llm_gateway.rs"]
mod llm_gateway_example;
mod mcp;
mod proxy;
#[cfg(feature = "redis")]
mod replicas;
/// The demo's own proxy, which the tests drive rather than a copy of it.
#[path = "../../examples/reverse_proxy/proxy.rs"]
mod reverse_proxy;
/// The demo's page and upstream, which the tests drive as they are.
#[path = "../../examples/reverse_proxy/demo.rs"]
mod reverse_proxy_demo;
