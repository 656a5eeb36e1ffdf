//! The soak: real reconnecting clients through two replicas of the demo's
//! proxy, under churn and faults, each event counted.
//!
//! ```text
//! ulimit -n 16384; cargo run --release --features redis --example soak
//! cargo run --release --features redis --example soak -- --upstream live --faults replica,redis
//! cargo run --release --features redis --example soak -- --streams 200 --seconds 60 --faults all --check
//! ```
//!
//! This process runs a `redis-server` of its own, the upstream (`upstream.rs`:
//! numbered events on every stream, at `--rate` a second) and the clients
//! (`client.rs`). The two replicas of the proxy, each the demo's proxy with
//! the layer over one `RedisStore`, run in child processes (this program
//! again, as `soak replica ...`), so that one can be killed with `SIGKILL`
//! and their CPU time and memory are their own. Every client drops its
//! connection after a random time (exponential, mean `--mean-drop`) and
//! reconnects as `EventSource` does, with `Last-Event-ID` after the
//! stream's `retry`, to the other replica each time.
//!
//! At the end the upstream stops numbering, the clients stop dropping and
//! catch up, and the soak reports, over every stream (`accounting.rs`):
//! the events delivered, lost (never received, with no gap signal),
//! doubled and signalled (never received, after a gap signal), counted
//! from the first event the upstream sent on each stream to the last it
//! numbered, in every epoch; which of the lost and signalled ones a fault
//! explains (due within its window, on a stream it affects) and which no
//! fault does; the reconnects; the replicas' CPU and memory; Redis's
//! commands (those its scripts call included) and CPU time per event
//! delivered, from its own `INFO`; and the time
//! from a reconnect's request to its first byte. With `--check` it exits
//! non-zero when an event is doubled, an event is lost without a gap
//! signal, an event is signalled that no fault explains, or a replica
//! panicked. With `SOAK_DEBUG=1` in the
//! environment, every skip without a gap signal is written to standard
//! error as the client sees it: which events, after which, at which
//! reconnect, on which stream and through which replica (each response
//! says which in `x-soak-replica`); and each replica writes the layer's
//! debug events to its log (how each request was served: its cursor, its
//! replay, and takeover, follow or upstream), to be matched by time and
//! stream.
//!
//! The replicas keep their logs in `$TMPDIR/soak-<pid>/`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

mod accounting;
mod client;
#[path = "../common/process.rs"]
mod process;
mod redis_cost;
mod replica;
/// The demo's own proxy, which the replicas run.
#[path = "../reverse_proxy/proxy.rs"]
mod reverse_proxy;
mod trace;
mod upstream;

use accounting::{Account, Affected, FaultWindow};
use client::Misbehaviour;
use redis_cost::RedisCost;
use replica::{LEASE, Replica, Setup};
use upstream::{Kind, Upstream};

const USAGE: &str = "\
Usage: soak [--streams N] [--seconds S] [--rate R] [--mean-drop SECS]
            [--upstream resumes|live] [--faults F,F..|all] [--bad-clients PCT] [--check]

Options:
  --streams N        good clients, one stream each (default 1000)
  --seconds S        seconds of churn before the end (default 600)
  --rate R           events per second on each stream (default 20)
  --mean-drop SECS   mean time before a client drops its connection (default 5)
  --upstream K       resumes: resumes from Last-Event-ID, two events early,
                     no history or linger in the proxy; live: cannot resume,
                     the proxy keeps a history and lingers (default resumes)
  --faults F,F..     at even times during the run, each once:
                     replica (the replica holding the most streams killed
                     with SIGKILL, then restarted),
                     redis (redis-server killed, then restarted empty),
                     upstream (the upstream restarted, resuming afterwards),
                     renumber (the upstream restarted, numbering from 1);
                     all: those that apply to the upstream kind
  --bad-clients PCT  as many bad clients as PCT% of the streams, in turns:
                     garbage and 8 KiB cursors, slowloris headers, never read
  --check            exit 1 on a doubled event, a panic, an event lost
                     without a gap signal, or one signalled that no fault
                     explains: only the streams a fault affects (all, or
                     those a killed replica held) may miss events, and only
                     those due from 0.5 s before it to twice the lease and
                     0.5 s after it ended, each signalled

N streams need about 3N + 100 open files: raise the limit first, e.g.
`ulimit -n 16384`.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Replica,
    Redis,
    Upstream,
    Renumber,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Replica => "replica",
            Fault::Redis => "redis",
            Fault::Upstream => "upstream",
            Fault::Renumber => "renumber",
        }
    }

    /// Whether this fault can cost events to a stream of an upstream of
    /// `kind`. An upstream that resumes loses nothing to a replica
    /// killed, Redis emptied or itself restarted: it is asked again from
    /// the client's cursor. Only renumbering loses what the old epoch
    /// numbered and had not sent. An upstream that cannot resume loses
    /// what it sent while nobody read it: while a follower had not yet
    /// noticed its holder died, while Redis was away or forgot the
    /// histories, while the proxy had not yet asked it again after a
    /// restart.
    fn can_lose(self, kind: Kind) -> bool {
        kind == Kind::Live || self == Fault::Renumber
    }
}

/// A fault's window opens this long before the fault, for events that
/// were in flight when it came.
const WINDOW_BEFORE: Duration = Duration::from_millis(500);

/// A fault's window closes this long after what it broke came back: a
/// follower notices a dead holder within twice the lease, and then asks
/// the upstream again.
fn window_after() -> Duration {
    LEASE * 2 + Duration::from_millis(500)
}

struct Options {
    streams: usize,
    seconds: u64,
    rate: u32,
    mean_drop: Duration,
    kind: Kind,
    faults: Vec<Fault>,
    bad_percent: u32,
    check: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if args.first().map(String::as_str) == Some("replica") {
        return runtime.block_on(replica::main(&args[1..]));
    }
    let options = match parse_args(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(soak(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options {
        streams: 1000,
        seconds: 600,
        rate: 20,
        mean_drop: Duration::from_secs(5),
        kind: Kind::Resumes,
        faults: Vec::new(),
        bad_percent: 0,
        check: false,
    };
    let mut faults = String::new();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |value: &str, range: std::ops::RangeInclusive<u64>| {
            (value.parse().ok())
                .filter(|n| range.contains(n))
                .ok_or(format!("{flag}: want {range:?}, got {value}"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--streams" => options.streams = number(value()?, 1..=100_000)? as usize,
            "--seconds" => options.seconds = number(value()?, 10..=86_400)?,
            "--rate" => options.rate = number(value()?, 1..=1000)? as u32,
            "--mean-drop" => options.mean_drop = Duration::from_secs(number(value()?, 1..=3600)?),
            "--bad-clients" => options.bad_percent = number(value()?, 0..=100)? as u32,
            "--upstream" => {
                options.kind = match value()?.as_str() {
                    "resumes" => Kind::Resumes,
                    "live" => Kind::Live,
                    other => return Err(format!("--upstream: want resumes or live: {other}")),
                }
            }
            "--faults" => faults = value()?.clone(),
            "--check" => options.check = true,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    for name in faults.split(',').filter(|name| !name.is_empty()) {
        let fault = match name {
            "replica" => vec![Fault::Replica],
            "redis" => vec![Fault::Redis],
            "upstream" => vec![Fault::Upstream],
            "renumber" => vec![Fault::Renumber],
            // Killing a holder or Redis matters where the proxy holds the
            // streams; restarting the upstream where it resumes.
            "all" if options.kind == Kind::Live => vec![Fault::Replica, Fault::Redis],
            "all" => vec![Fault::Upstream, Fault::Renumber, Fault::Replica],
            other => return Err(format!("--faults: unknown fault {other}")),
        };
        options.faults.extend(fault);
    }
    Ok(Some(options))
}

/// Runs the soak; returns whether `--check` passed.
async fn soak(options: Options) -> Result<bool, String> {
    // Every time the accounting compares is in seconds since this.
    let origin = Instant::now();
    let needed = 3 * options.streams as u64 + 100;
    if open_files_limit().is_some_and(|limit| limit < needed) {
        return Err(format!(
            "{needed} open files needed: raise the limit (ulimit -n)"
        ));
    }
    let mut redis =
        tower_sse_resume_support::RedisServer::start().ok_or("redis-server is not on PATH")?;
    let mut redis_cost = RedisCost::start(&redis);
    let upstream = Upstream::start(options.kind, options.rate)
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    let setup = Setup {
        upstream: upstream.addr,
        redis: redis.url(),
        linger: options.kind == Kind::Live,
    };
    let logs = std::env::temp_dir().join(format!("soak-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut replicas = Vec::new();
    for i in 0..2 {
        replicas.push(Replica::spawn(
            &setup,
            &i.to_string(),
            0,
            logs.join(format!("replica{i}.log")),
        )?);
    }
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(replicas.iter().map(|r| r.addr).collect());
    println!(
        "soak: {} streams at {}/s, {:?} upstream, faults {:?}, {}% bad clients, {} s; replicas {:?}",
        options.streams,
        options.rate,
        options.kind,
        options.faults,
        options.bad_percent,
        options.seconds,
        addrs
    );

    let (churn_tx, churn) = watch::channel(true);
    let (stop_tx, stop) = watch::channel(false);
    let mut clients = Vec::new();
    // Where each stream would start if the upstream sent it nothing.
    let mut starts = Vec::new();
    for i in 0..options.streams {
        let session = format!("soak-{i}");
        starts.push(upstream.start_now());
        let client = client::good_client(
            session,
            Arc::clone(&addrs),
            options.mean_drop,
            churn.clone(),
            stop.clone(),
            i as u64 + 1,
        );
        clients.push(tokio::spawn(client));
        // Spread over a second: no thundering herd at the start.
        tokio::time::sleep(Duration::from_micros(1_000_000 / options.streams as u64)).await;
    }
    let bad = options.streams * options.bad_percent as usize / 100;
    let mut bad_clients = Vec::new();
    for i in 0..bad {
        let how = [
            Misbehaviour::Garbage,
            Misbehaviour::Slowloris,
            Misbehaviour::NeverReads,
        ][i % 3];
        let client = client::bad_client(
            how,
            format!("bad-{i}"),
            addrs[i % 2],
            stop.clone(),
            i as u64,
        );
        bad_clients.push(tokio::spawn(client));
    }

    // The run: RSS every 10 s (more often in a short run), the faults at
    // even times.
    let every = (Duration::from_secs(options.seconds) / 12)
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    let started = Instant::now();
    let run = Duration::from_secs(options.seconds);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let fault_times: Vec<Duration> = (1..=options.faults.len())
        .map(|k| run.mul_f64(k as f64 / (options.faults.len() + 1) as f64))
        .collect();
    let mut next_fault = 0;
    let mut windows = Vec::new();
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < run {
        let now = started.elapsed();
        if now >= next_sample {
            let rss: u64 = replicas.iter().filter_map(Replica::rss_kib).sum();
            samples.push((now.as_secs_f64(), rss));
            next_sample += every;
        }
        if next_fault < options.faults.len() && now >= fault_times[next_fault] {
            let fault = options.faults[next_fault];
            let at = origin.elapsed();
            println!("{:>5.1} s  fault: {}", at.as_secs_f64(), fault.name());
            let affected = inject(
                fault,
                &mut replicas,
                &mut redis,
                &mut redis_cost,
                &upstream,
                &setup,
            )
            .await?;
            if fault.can_lose(options.kind) {
                let window = FaultWindow {
                    fault: fault.name(),
                    from: at.saturating_sub(WINDOW_BEFORE).as_secs_f64(),
                    to: (origin.elapsed() + window_after()).as_secs_f64(),
                    streams: affected,
                };
                windows.push(window);
            }
            next_fault += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The end: nothing new, nobody drops; the clients catch up.
    upstream.freeze();
    let _ = churn_tx.send(false);
    let catch_up = Duration::from_secs(5) + LEASE * 3;
    tokio::time::sleep(catch_up).await;
    let _ = stop_tx.send(true);
    let timeline = upstream.timeline(origin);
    let mut total = Account::default();
    let mut reconnects = 0;
    let mut first_byte_us = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let tally = client.await.map_err(|e| e.to_string())?;
        // What the upstream sent first on this stream; if nothing, where
        // it would have started when the client did.
        let first = upstream
            .first_sent(&format!("soak-{i}"))
            .unwrap_or(starts[i]);
        let cuts: Vec<f64> = (tally.cuts_before_first.iter())
            .map(|at| at.duration_since(origin).as_secs_f64())
            .collect();
        total.add(accounting::account(
            i,
            first,
            &tally.received,
            &cuts,
            &timeline,
            &windows,
        ));
        reconnects += tally.reconnects;
        first_byte_us.extend(tally.first_byte_us);
    }
    let mut bad_requests = 0;
    for client in bad_clients {
        bad_requests += client.await.unwrap_or(0);
    }
    redis_cost.add(&redis);
    let cpu: f64 = replicas.iter().filter_map(Replica::cpu_seconds).sum();
    let stats: Vec<String> = replicas.iter_mut().filter_map(Replica::stats).collect();
    let panicked = replicas.iter().any(|replica| {
        std::fs::read_to_string(&replica.log).is_ok_and(|log| log.contains("panicked"))
    });
    let report = Report {
        total,
        reconnects,
        first_byte_us,
        windows,
        seconds: started.elapsed().as_secs_f64(),
        cpu,
        samples,
        bad_requests,
        panicked,
    };
    report.print();
    redis_cost.print(report.total.delivered, report.seconds);
    for (i, stats) in stats.iter().enumerate() {
        println!("replica {i}: {stats}");
    }
    Ok(!options.check || report.check())
}

/// Injects `fault`, and waits for what it broke to come back; returns
/// the streams it can cost events: those the killed replica held, or all.
async fn inject(
    fault: Fault,
    replicas: &mut [Replica],
    redis: &mut tower_sse_resume_support::RedisServer,
    redis_cost: &mut RedisCost,
    upstream: &Upstream,
    setup: &Setup,
) -> Result<Affected, String> {
    match fault {
        Fault::Replica => {
            // The replica that holds the most streams: the one whose death
            // costs the most.
            let held: Vec<BTreeSet<usize>> = (replicas.iter())
                .map(|replica| {
                    (upstream.held_by(&replica.name).iter())
                        .filter_map(|stream| stream.strip_prefix("soak-")?.parse().ok())
                        .collect()
                })
                .collect();
            let k = (0..replicas.len())
                .max_by_key(|&k| held[k].len())
                .unwrap_or(0);
            let replica = &mut replicas[k];
            let (name, addr, log) = (replica.name.clone(), replica.addr, replica.log.clone());
            replica.kill();
            let counts: Vec<usize> = held.iter().map(BTreeSet::len).collect();
            println!("         killed replica {name}; the replicas held {counts:?} streams");
            tokio::time::sleep(Duration::from_secs(2)).await;
            replicas[k] = Replica::spawn(setup, &name, addr.port(), log)?;
            Ok(Affected::Only(held[k].clone()))
        }
        Fault::Redis => {
            // Restarted empty: it forgets every stream, and its counters.
            redis_cost.add(redis);
            redis.kill();
            redis_cost.restarted();
            tokio::time::sleep(Duration::from_secs(2)).await;
            redis.restart();
            Ok(Affected::All)
        }
        Fault::Upstream => {
            upstream.restart(false);
            Ok(Affected::All)
        }
        Fault::Renumber => {
            upstream.restart(true);
            Ok(Affected::All)
        }
    }
}

struct Report {
    total: Account,
    reconnects: u64,
    /// From each reconnect's request to the first byte of its body.
    first_byte_us: Vec<u32>,
    /// The faults that can cost events, and when.
    windows: Vec<FaultWindow>,
    seconds: f64,
    /// The replicas' CPU time, in seconds.
    cpu: f64,
    /// The replicas' RSS in KiB, every 10 s or so.
    samples: Vec<(f64, u64)>,
    bad_requests: u64,
    panicked: bool,
}

impl Report {
    fn print(&self) {
        let t = &self.total;
        println!(
            "events: {} delivered, {} lost, {} doubled, {} signalled; {} reconnects",
            t.delivered,
            t.lost(),
            t.doubled,
            t.signalled(),
            self.reconnects
        );
        for window in &self.windows {
            let streams = match &window.streams {
                Affected::All => "every stream".to_owned(),
                Affected::Only(streams) => format!("{} streams", streams.len()),
            };
            println!(
                "fault window: {} from {:.1} s to {:.1} s, {streams}",
                window.fault, window.from, window.to
            );
        }
        println!(
            "in fault windows: {} lost, {} signalled",
            t.lost_in_windows, t.signalled_in_windows
        );
        println!(
            "outside fault windows: {} lost, {} signalled; {} signalled at a stream's first hole after one",
            t.lost_outside, t.signalled_outside, t.signalled_after_windows
        );
        if t.signalled_at_start > 0 {
            println!(
                "signalled at a stream's start: {}, written to a connection cut before any event reached its client, which came back without a cursor and heard of the gap",
                t.signalled_at_start
            );
        }
        if t.empty_gaps > 0 || t.silent_streams > 0 {
            println!(
                "gap signals with nothing missing: {}; streams that got no event: {}",
                t.empty_gaps, t.silent_streams
            );
        }
        if !t.unexplained.is_empty() {
            // When the unexplained events were due, 5 s at a time.
            let mut buckets = std::collections::BTreeMap::<u64, u64>::new();
            for hole in &t.unexplained {
                *buckets.entry(hole.due as u64 / 5 * 5).or_default() += hole.to - hole.from + 1;
            }
            let buckets: Vec<String> = (buckets.iter())
                .map(|(from, n)| format!("{from}-{} s: {n}", from + 5))
                .collect();
            println!("unexplained, by when due: {}", buckets.join(", "));
            for hole in t.unexplained.iter().take(10) {
                println!("unexplained: {hole}");
            }
            if t.unexplained.len() > 10 {
                println!("unexplained: and {} more holes", t.unexplained.len() - 10);
            }
        }
        let mut first_byte = self.first_byte_us.clone();
        first_byte.sort_unstable();
        let at = |q: f64| {
            let i =
                ((first_byte.len() as f64 * q) as usize).min(first_byte.len().saturating_sub(1));
            first_byte.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
        };
        println!(
            "reconnect to first byte: p50 {:.2} ms, p99 {:.2} ms",
            at(0.5),
            at(0.99)
        );
        let (first, last) = self.rss_windows();
        println!(
            "replicas: {:.1}% of a core in all; RSS {:.1} MiB over {first:?} s, {:.1} MiB over {last:?} s",
            100.0 * self.cpu / self.seconds,
            self.rss_mib(first),
            self.rss_mib(last),
        );
        println!("bad clients: {} requests", self.bad_requests);
        if self.panicked {
            println!("a replica PANICKED: see its log");
        }
    }

    /// Where memory is compared: the first minute after a minute of
    /// warm-up, and the last minute; in a run shorter than three minutes,
    /// its second sixth and its last.
    fn rss_windows(&self) -> ((u64, u64), (u64, u64)) {
        let end = self.samples.last().map_or(0, |&(at, _)| at as u64);
        if end >= 180 {
            ((60, 120), (end - 60, end))
        } else {
            ((end / 6, end / 3), (end * 5 / 6, end))
        }
    }

    /// The mean RSS, in MiB, of the samples in `(from, to)` seconds.
    fn rss_mib(&self, (from, to): (u64, u64)) -> f64 {
        let window: Vec<u64> = (self.samples.iter())
            .filter(|&&(at, _)| at >= from as f64 && at <= to as f64)
            .map(|&(_, rss)| rss)
            .collect();
        let mean = window.iter().sum::<u64>() as f64 / window.len().max(1) as f64;
        mean / 1024.0
    }

    /// Whether the run shows what must hold: nothing doubled, no panic,
    /// no event lost without a gap signal, and none signalled that a fault
    /// cannot explain (see `accounting`, and `Fault::can_lose` for which faults
    /// explain what, and for which streams).
    fn check(&self) -> bool {
        let t = &self.total;
        let ok = t.holds() && !self.panicked && t.delivered > 0;
        if t.doubled > 0 {
            println!("check: {} events doubled", t.doubled);
        }
        println!("check: {}", if ok { "passed" } else { "FAILED" });
        ok
    }
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
