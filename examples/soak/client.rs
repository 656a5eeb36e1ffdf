//! The soak's clients. A good client follows one stream as `EventSource`
//! does: it drops its connection at random times (exponentially
//! distributed), then reconnects after the stream's `retry` with
//! `Last-Event-ID`, to the next replica in turn, and counts every event
//! it gets against the upstream's numbering. Bad clients send garbage
//! and huge cursors, headers one byte at a time, or never read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::accounting::Received;
use crate::upstream::parse_data;

/// The event type of the layer's gap signal.
const GAP: &str = "event: sse-resume-gap";
/// How long a client waits to reconnect when the stream set no `retry`.
const DEFAULT_RETRY: Duration = Duration::from_millis(250);

/// What one client counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Every event and gap signal, in order.
    pub(crate) received: Received,
    pub(crate) reconnects: u64,
    /// From sending each request to the first byte of its body.
    pub(crate) first_byte_us: Vec<u32>,
    /// The stream and replica of the connection now, for `SOAK_DEBUG`.
    pub(crate) connection: String,
    /// When connections ended before the client had any event: it came
    /// back without a cursor each time.
    pub(crate) cuts_before_first: Vec<Instant>,
}

impl Tally {
    /// Counts event `n` of `epoch`.
    fn event(&mut self, epoch: u64, n: u64) {
        let debug = std::env::var_os("SOAK_DEBUG").is_some();
        if let Some((last_epoch, last)) = self.received.last().filter(|_| debug) {
            let skipped = n.saturating_sub(last + 1);
            if epoch == last_epoch && skipped > 0 && !self.received.gap_pending() {
                eprintln!(
                    "{} lost {skipped} before {epoch}:{n} after {last_epoch}:{last}, reconnect {}, {}",
                    crate::trace::now(),
                    self.reconnects,
                    self.connection
                );
            }
            if (epoch, n) <= (last_epoch, last) {
                eprintln!(
                    "{} doubled {epoch}:{n} after {last_epoch}:{last}, reconnect {}, {}",
                    crate::trace::now(),
                    self.reconnects,
                    self.connection
                );
            }
        }
        self.received.event(epoch, n);
    }
}

/// A tiny xorshift generator: the soak needs no cryptography, and no
/// dependency for it.
pub(crate) struct Random(u64);

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in (0, 1].
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponentially distributed with `mean`.
    pub(crate) fn exponential(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(-self.next().ln())
    }
}

/// Follows the stream of `session` through `replicas` in turn until
/// `stop`, dropping its connection after a random time of mean
/// `mean_drop` while `churn` holds.
pub(crate) async fn good_client(
    session: String,
    replicas: Arc<Vec<SocketAddr>>,
    mean_drop: Duration,
    churn: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut random = Random::new(seed);
    let mut retry = DEFAULT_RETRY;
    let mut attempt = 0usize;
    while !*stop.borrow() {
        let replica = replicas[attempt % replicas.len()];
        attempt += 1;
        let cursor = tally.received.last().map(|(_, n)| n.to_string());
        let drop_after = random.exponential(mean_drop);
        tally.connection = format!("{session} via {replica}");
        let connection = tokio::select! {
            connection = follow_once(replica, &session, cursor, drop_after, &churn, &mut tally, &mut retry) => connection,
            _ = stop.changed() => break,
        };
        if connection.is_err() {
            // Refused (a replica restarting) or cut: as a drop.
        }
        if tally.received.last().is_none() {
            tally.cuts_before_first.push(Instant::now());
        }
        tally.reconnects += 1;
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => break,
        }
    }
    tally
}

/// One connection: the request, then the events, until the connection
/// ends, or `drop_after` passed while `churn` holds.
async fn follow_once(
    replica: SocketAddr,
    session: &str,
    cursor: Option<String>,
    drop_after: Duration,
    churn: &watch::Receiver<bool>,
    tally: &mut Tally,
    retry: &mut Duration,
) -> Result<(), String> {
    let stream = TcpStream::connect(replica)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let mut request = Request::get("/events").header("mcp-session-id", session);
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let sent = Instant::now();
    let response = sender.send_request(request).await;
    let result = match response {
        Ok(response) if response.status() == 200 => {
            if let Some(name) = response.headers().get(crate::replica::NAME_HEADER) {
                let name = String::from_utf8_lossy(name.as_bytes());
                tally.connection = format!("{session} via {replica} (replica {name})");
            }
            read_events(response.into_body(), sent, drop_after, churn, tally, retry).await;
            Ok(())
        }
        Ok(response) => Err(format!("status {}", response.status())),
        Err(error) => Err(error.to_string()),
    };
    // Dropping the connection closes it: the proxy sees the client go.
    connection.abort();
    result
}

async fn read_events(
    mut body: hyper::body::Incoming,
    sent: Instant,
    drop_after: Duration,
    churn: &watch::Receiver<bool>,
    tally: &mut Tally,
    retry: &mut Duration,
) {
    let deadline = Instant::now() + drop_after;
    let mut pending = String::new();
    let mut first = true;
    loop {
        let dropping = async {
            tokio::time::sleep_until(deadline).await;
            // Once the soak calms down, nobody drops any more.
            if !*churn.borrow() {
                std::future::pending::<()>().await;
            }
        };
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = dropping => return,
        };
        let Some(Ok(frame)) = frame else {
            return;
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if first {
            first = false;
            let micros = sent.elapsed().as_micros();
            tally
                .first_byte_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            for line in block.lines() {
                if line == GAP {
                    tally.received.gap();
                } else if let Some(ms) = line.strip_prefix("retry: ") {
                    if let Ok(ms) = ms.parse() {
                        *retry = Duration::from_millis(ms);
                    }
                } else if let Some(data) = line.strip_prefix("data: ") {
                    if let Some((epoch, n)) = parse_data(data) {
                        tally.event(epoch, n);
                    }
                }
            }
        }
    }
}

/// What a bad client does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Misbehaviour {
    /// A cursor of random bytes, or 8 KiB long.
    Garbage,
    /// Headers one byte at a time, 100 ms apart.
    Slowloris,
    /// A request, and then nothing read.
    NeverReads,
}

/// Misbehaves against `replica` until `stop`; returns the requests made.
pub(crate) async fn bad_client(
    how: Misbehaviour,
    session: String,
    replica: SocketAddr,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) -> u64 {
    let mut random = Random::new(seed);
    let mut requests = 0;
    while !*stop.borrow() {
        requests += 1;
        let once = misbehave(how, &session, replica, &mut random);
        tokio::select! {
            _ = once => {}
            _ = stop.changed() => break,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => break,
        }
    }
    requests
}

async fn misbehave(
    how: Misbehaviour,
    session: &str,
    replica: SocketAddr,
    random: &mut Random,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(replica).await?;
    let cursor = match how {
        Misbehaviour::Garbage if random.next() < 0.5 => "9".repeat(8192),
        Misbehaviour::Garbage => (0..32)
            .map(|_| char::from(b'!' + (random.next() * 90.0) as u8))
            .collect(),
        _ => "1".to_owned(),
    };
    let head = format!(
        "GET /events HTTP/1.1\r\nhost: soak\r\nmcp-session-id: {session}\r\nlast-event-id: {cursor}\r\n\r\n"
    );
    match how {
        Misbehaviour::Slowloris => {
            for byte in head.as_bytes() {
                stream.write_all(&[*byte]).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Misbehaviour::NeverReads => {
            stream.write_all(head.as_bytes()).await?;
            // The proxy writes into a socket nobody reads, for a while.
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Misbehaviour::Garbage => {
            stream.write_all(head.as_bytes()).await?;
            let mut buffer = [0u8; 4096];
            let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer);
            let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
        }
    }
    Ok(())
}
