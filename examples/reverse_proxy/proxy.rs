//! The proxy of the demo: the session scope, and a service that forwards
//! every request to an upstream, streaming both bodies. The end-to-end
//! tests (`tests/end_to_end`) drive this same code.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::service_fn;
use tower_sse_resume::key::{Header, KeyExtractor, Query};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Whose stream a request is after: its `Mcp-Session-Id`, or for browsers,
/// whose `EventSource` cannot send headers, the `session` in the query.
pub(crate) fn session_scope(parts: &Parts) -> Option<String> {
    Header::mcp_session_id()
        .extract(parts)
        .or_else(|| Query::new("session").extract(parts))
}

/// The service that forwards every request to `upstream`, over HTTP/1.1.
pub(crate) fn forwarder(
    upstream: Uri,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    forwarder_over(upstream, false)
}

/// The service that forwards every request to `upstream`, over HTTP/2
/// with prior knowledge (h2c) when `http2`, else over HTTP/1.1.
pub(crate) fn forwarder_over(
    upstream: Uri,
    http2: bool,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(HttpConnector::new());
    service_fn(move |request| forward(client.clone(), upstream.clone(), request))
}

/// Serves `service` on every connection `listener` accepts.
pub(crate) async fn serve<S, B>(listener: TcpListener, service: S) -> Result<(), String>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: let some close.
                eprintln!("accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends `request` on to `upstream`, streaming both bodies.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{}", upstream.to_string().trim_end_matches('/'), path).parse::<Uri>()
    else {
        return Ok(error_response(StatusCode::BAD_REQUEST, "bad request path"));
    };
    remove_hop_by_hop(&mut parts.headers);
    if let Some(authority) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, authority);
    }
    parts.uri = uri;
    // The client speaks HTTP/1.1 to the upstream, whatever the client spoke.
    parts.version = Version::HTTP_11;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                body.map_err(BoxError::from).boxed(),
            ))
        }
        Err(error) => {
            // hyper-util's error says little by itself: add its causes.
            let mut message = format!("upstream {upstream} unreachable: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message.push('\n');
            Ok(error_response(StatusCode::BAD_GATEWAY, &message))
        }
    }
}

/// Drops the headers that describe one connection, not the message.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(message.to_owned()))
        .map_err(BoxError::from)
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
