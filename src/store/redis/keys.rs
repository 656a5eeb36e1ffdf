//! Key naming: the keys of a scope, their hash tag, and the escaping that
//! keeps scopes apart. The layout is described on [`RedisStore`].
//!
//! [`RedisStore`]: super::RedisStore

use super::Config;
use super::scripts::millis;

/// The keys of one scope.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) streams: String,
    pub(super) generations: String,
    /// StreamState keys are this followed by the stream.
    pub(super) windows: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, scope: &str) -> Self {
        Self {
            streams: scope_key(prefix, scope, "s"),
            generations: scope_key(prefix, scope, "g"),
            windows: scope_key(prefix, scope, "w:"),
        }
    }

    pub(super) fn window(&self, stream: &str) -> String {
        let mut key = String::with_capacity(self.windows.len() + stream.len());
        key.push_str(&self.windows);
        key.push_str(stream);
        key
    }

    /// Sets the keys and arguments every script starts with.
    pub(super) fn bind<'a, 'b>(
        &self,
        invocation: &'b mut ::redis::ScriptInvocation<'a>,
        config: &Config,
    ) -> &'b mut ::redis::ScriptInvocation<'a> {
        let [events, bytes, age] = history_args(config);
        invocation
            .key(&self.streams)
            .key(&self.generations)
            .arg(&self.windows)
            .arg(millis(config.ttl))
            .arg(config.window_len)
            .arg(config.max_streams_per_scope)
            .arg(events)
            .arg(bytes)
            .arg(age)
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

/// The history's bounds as the scripts take them: most blocks (0 for no
/// history), bytes, and age in ms.
pub(super) fn history_args(config: &Config) -> [u64; 3] {
    match &config.history {
        Some(limits) => [
            u64::try_from(limits.events()).unwrap_or(u64::MAX),
            u64::try_from(limits.bytes()).unwrap_or(u64::MAX),
            millis(limits.age()),
        ],
        None => [0, 0, 0],
    }
}
