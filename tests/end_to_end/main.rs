//! End to end over real sockets: a flaky upstream, the proxy with the layer,
//! and real clients (headless Chromium, `eventsource-client`).

mod browser;
mod client_crate;
mod proxy;
