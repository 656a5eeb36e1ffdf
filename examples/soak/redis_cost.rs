//! What Redis spent on the soak, from its own `INFO`: commands (every
//! call, including those a script makes, as `INFO commandstats` counts
//! them) and CPU time (`INFO cpu`), so that the report gives both per
//! event delivered.

use std::collections::BTreeMap;

use tower_sse_resume_support::RedisServer;

/// What one `INFO` read says: calls and µs per command, and CPU seconds.
#[derive(Clone, Debug, Default)]
struct Sample {
    calls: BTreeMap<String, u64>,
    usec: BTreeMap<String, u64>,
    cpu: f64,
    /// Of `cpu`, the seconds in the kernel: mostly the network's.
    sys: f64,
}

impl Sample {
    fn read(server: &RedisServer) -> Option<Self> {
        let stats = server.info("commandstats")?;
        let cpu = server.info("cpu")?;
        let (mut calls, mut usec) = (BTreeMap::new(), BTreeMap::new());
        for line in stats.lines() {
            // cmdstat_get:calls=12,usec=...,...
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |prefix: &str| -> u64 {
                (fields.split(','))
                    .find_map(|field| field.strip_prefix(prefix))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            calls.insert(name.to_owned(), field("calls="));
            usec.insert(name.to_owned(), field("usec="));
        }
        let seconds = |field: &str| -> f64 {
            (cpu.lines())
                .find_map(|line| line.strip_prefix(field)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Some(Self {
            calls,
            usec,
            cpu: seconds("used_cpu_sys:") + seconds("used_cpu_user:"),
            sys: seconds("used_cpu_sys:"),
        })
    }
}

/// Redis's spending over the run, across restarts of the server (a
/// restart starts its counters over: what the old one counted is added
/// before it goes).
#[derive(Debug, Default)]
pub(crate) struct RedisCost {
    base: Sample,
    calls: BTreeMap<String, u64>,
    usec: BTreeMap<String, u64>,
    cpu: f64,
    sys: f64,
}

impl RedisCost {
    /// Starts counting from what `server` counted so far.
    pub(crate) fn start(server: &RedisServer) -> Self {
        Self {
            base: Sample::read(server).unwrap_or_default(),
            ..Self::default()
        }
    }

    /// Adds what `server` counted since the last read, and starts from
    /// there: before it is killed, and at the end.
    pub(crate) fn add(&mut self, server: &RedisServer) {
        let Some(now) = Sample::read(server) else {
            return;
        };
        for (name, &calls) in &now.calls {
            let before = self.base.calls.get(name).copied().unwrap_or(0);
            *self.calls.entry(name.clone()).or_default() += calls.saturating_sub(before);
        }
        for (name, &usec) in &now.usec {
            let before = self.base.usec.get(name).copied().unwrap_or(0);
            *self.usec.entry(name.clone()).or_default() += usec.saturating_sub(before);
        }
        self.cpu += (now.cpu - self.base.cpu).max(0.0);
        self.sys += (now.sys - self.base.sys).max(0.0);
        self.base = now;
    }

    /// After a restart the server counts from zero.
    pub(crate) fn restarted(&mut self) {
        self.base = Sample::default();
    }

    /// Prints commands and CPU per event delivered, and the commands that
    /// cost the most.
    pub(crate) fn print(&self, events: u64, seconds: f64) {
        // `INFO` itself is the soak's, not the store's.
        let counted = |name: &str| name != "info";
        let calls: u64 = (self.calls.iter())
            .filter(|(name, _)| counted(name))
            .map(|(_, n)| n)
            .sum();
        let per_event = |x: f64| x / events.max(1) as f64;
        println!(
            "redis: {calls} commands, {:.1} per event; {:.1} µs of CPU per event ({:.1} in the kernel), {:.1}% of a core",
            per_event(calls as f64),
            per_event(self.cpu * 1e6),
            per_event(self.sys * 1e6),
            100.0 * self.cpu / seconds.max(1e-9),
        );
        let mut top: Vec<(&String, &u64)> = self.calls.iter().filter(|(n, _)| counted(n)).collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = (top.iter().take(10))
            .map(|(name, n)| format!("{name} {:.2}", per_event(**n as f64)))
            .collect();
        println!("redis commands per event: {}", top.join(", "));
        // A script's time includes the calls it makes, which count theirs
        // too.
        let mut top: Vec<(&String, &u64)> = self.usec.iter().filter(|(n, _)| counted(n)).collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = (top.iter().take(8))
            .map(|(name, n)| format!("{name} {:.2}", per_event(**n as f64)))
            .collect();
        println!(
            "redis µs per event by command (a script's own include its calls'): {}",
            top.join(", ")
        );
    }
}
