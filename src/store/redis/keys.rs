//! Key naming: the keys of a scope, their hash tag, and the escaping that
//! keeps scopes apart. The layout is described on [`RedisStore`].
//!
//! [`RedisStore`]: super::RedisStore

use ::redis::Cmd;

use super::Config;
use super::replies::millis;
use super::scripts::Lua;
use crate::store::StoreLimits;

/// The keys of one scope, named as in the table on
/// [`RedisStore`](super::RedisStore). A script gets `streams`,
/// `generations`, the keys of its stream and `e` as its KEYS; the keys of
/// the scope's other streams, which only a cursor's search and the scope's
/// cap reach, it builds from `windows` alike.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// What every key of the scope starts with: `<prefix>{<scope>}:`.
    pub(super) scope: String,
    /// `s`: the scope's streams, scored by last use.
    pub(super) streams: String,
    /// `g`: each stream's generation.
    pub(super) generations: String,
    /// `w:`: what the scripts derive the scope's keys from. A stream's
    /// window is `w<generation>:<stream>` ([`Keys::window`]); `w:<stream>`
    /// names the stream in this process's queue, and no key.
    pub(super) windows: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, scope: &str) -> Self {
        Self {
            scope: scope_key(prefix, scope, ""),
            streams: scope_key(prefix, scope, "s"),
            generations: scope_key(prefix, scope, "g"),
            windows: scope_key(prefix, scope, "w:"),
        }
    }

    /// The key of `stream` of this scope that starts with `kind`: `w:`
    /// for its window, `h:` its history, `hi:` the history's index, `l:`
    /// its lease, `f:` its mark that it is followed, `a:` where its client
    /// went away, `d:` its mark that its upstream ended, `c:` its channel
    /// (no key, but named alike).
    pub(super) fn of(&self, kind: &str, stream: &str) -> String {
        let mut key = String::with_capacity(self.scope.len() + kind.len() + stream.len());
        key.push_str(&self.scope);
        key.push_str(kind);
        key.push_str(stream);
        key
    }

    /// The window of `stream` in `generation`: `w<generation>:<stream>`.
    /// A cursor's cut moves the window to the next generation's key, so
    /// that a write of ids forwarded before it finds none (see
    /// `scripts::PREAMBLE`).
    pub(super) fn window(&self, stream: &str, generation: u64) -> String {
        self.of(&format!("w{generation}:"), stream)
    }

    /// A call of `script` (by its hash, or with `whole` its code) for
    /// `stream`, with the keys and arguments every script of the preamble
    /// starts with, this process's time among them, and `window` as
    /// `KEYS[3]` (a write's window, an open's copy of it); the stream's
    /// name comes next, from the caller.
    pub(super) fn script_call(
        &self,
        script: &Lua,
        whole: bool,
        config: &Config,
        limits: &StoreLimits,
        stream: &str,
        window: &str,
    ) -> Cmd {
        let mut command = script.call(whole);
        command.arg(9).arg(&self.streams).arg(&self.generations);
        command.arg(window);
        for kind in ["h:", "hi:", "l:", "d:", "a:"] {
            command.arg(self.of(kind, stream));
        }
        command
            .arg(format!("{}e", self.scope))
            .arg(&self.windows)
            .arg(millis(config.ttl))
            .arg(limits.window_len())
            .arg(limits.max_streams_per_scope())
            .arg(history_args(limits).as_slice())
            .arg(now_ms());
        command
    }

    /// Every key of `stream` and of its scope that a script touches, its
    /// window that of `generation`, with the type it holds: what
    /// [`repair`](super::scripts::repair) checks.
    pub(super) fn typed(&self, stream: &str, generation: u64) -> Vec<(String, &'static str)> {
        let scope = |suffix: &str| format!("{}{suffix}", self.scope);
        vec![
            (self.streams.clone(), "zset"),
            (self.generations.clone(), "hash"),
            (scope("e"), "string"),
            (self.window(stream, generation), "list"),
            (self.of("h:", stream), "stream"),
            (self.of("hi:", stream), "list"),
            (self.of("a:", stream), "string"),
            (self.of("l:", stream), "string"),
            (self.of("f:", stream), "string"),
            (self.of("d:", stream), "string"),
        ]
    }
}

/// `<prefix>{<scope>}:<suffix>`, `prefix` escaped already.
pub(super) fn scope_key(prefix: &str, scope: &str, suffix: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + scope.len() + suffix.len() + 8);
    key.push_str(prefix);
    key.push('{');
    if scope.is_empty() {
        // `%` alone is no escape of anything, and an empty hash tag would
        // not be one.
        key.push('%');
    } else {
        escape_into(&mut key, scope);
    }
    key.push_str("}:");
    key.push_str(suffix);
    key
}

/// Escapes `%`, `{` and `}`, so that a hash tag's braces are the only ones
/// in a key and the escaped string maps back to one original.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    escape_into(&mut escaped, text);
    escaped
}

fn escape_into(escaped: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
}

/// This process's clock in ms since the Unix epoch, for the scripts: they
/// ask Redis for no time, a call fewer each.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The history's bounds as the scripts take them: most blocks (0 for no
/// history), bytes, and age in ms.
pub(super) fn history_args(limits: &StoreLimits) -> [u64; 3] {
    match &limits.history() {
        Some(limits) => [
            u64::try_from(limits.events()).unwrap_or(u64::MAX),
            u64::try_from(limits.bytes()).unwrap_or(u64::MAX),
            millis(limits.age()),
        ],
        None => [0, 0, 0],
    }
}
