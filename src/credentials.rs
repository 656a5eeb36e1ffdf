//! Whose a stream is: every stream belongs to the credentials of the
//! requests that made it.
//!
//! A session id is not a credential: it leaks through logs, URLs and
//! shared links, and is often guessable. Yet the layer answers some
//! requests from what it kept, without the upstream: a replay, a
//! takeover, a follow, a complete stream's rest; and one request acts on
//! another's stream: injection, the one-client displacement. So the layer
//! keeps each stream under its scope *and* a keyed fingerprint of the
//! request's credentials. A request with other credentials (or none) is
//! in another partition: it finds nothing there, and goes to the
//! upstream, which decides. Nothing of the credentials is kept but the
//! fingerprint, an HMAC-SHA-256 under a key that never leaves the
//! process.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use http::request::Parts;
use sha2::Sha256;

use crate::key::{BoxedExtractor, DefaultCredentials};
use crate::lock::lock;

/// What separates a scope from its credentials' fingerprint in the scope a
/// stream is kept under. No header value can hold it, and a scope that
/// does is taken for no scope, so that no request can name another's
/// partition.
const SEPARATOR: char = '\u{1f}';

/// How many scopes [`Binding::changed`] remembers the last credentials of;
/// past it, it starts over.
const MAX_REMEMBERED_SCOPES: usize = 65_536;

/// How the layer binds a stream to credentials: the extractor that reads
/// them and the key of their fingerprint.
#[derive(Clone)]
pub(crate) struct Binding {
    /// `None`: streams belong to their scope alone.
    extractor: Option<Arc<BoxedExtractor>>,
    key: Arc<[u8]>,
    /// Whether the key was given (`credential_key`), the same on every
    /// replica, rather than made at random for this process.
    shared_key: bool,
    /// The fingerprint of each scope's latest credentials, by the scope's
    /// hash: what tells that they changed.
    latest: Arc<Mutex<HashMap<u64, u64>>>,
}

impl Binding {
    /// Reads credentials with `extractor`, under a key new to this
    /// process.
    pub(crate) fn new(extractor: Option<BoxedExtractor>) -> Self {
        Self {
            extractor: extractor.map(Arc::new),
            key: random_key(),
            shared_key: false,
            latest: Arc::default(),
        }
    }

    pub(crate) fn set_extractor(&mut self, extractor: Option<BoxedExtractor>) {
        self.extractor = extractor.map(Arc::new);
    }

    pub(crate) fn set_key(&mut self, key: &[u8]) {
        self.key = Arc::from(key);
        self.shared_key = true;
    }

    /// Whether the key is the same on every replica that was given it.
    pub(crate) fn has_shared_key(&self) -> bool {
        self.shared_key
    }

    /// The scope `scope`'s stream is kept under for the request `parts`:
    /// `scope` itself without credentials, else `scope`, the separator and
    /// the credentials' fingerprint. `None` for a scope that holds the
    /// separator. Also says whether the credentials are not those of the
    /// scope's previous request.
    pub(crate) fn bind(&self, scope: String, parts: &Parts) -> Option<Bound> {
        if scope.contains(SEPARATOR) {
            return None;
        }
        let Some(credentials) = (self.extractor.as_ref()).and_then(|e| e.extract(parts)) else {
            return Some(Bound {
                changed: self.changed(&scope, None),
                scope,
                fingerprinted: false,
            });
        };
        let fingerprint = self.fingerprint(&credentials);
        let changed = self.changed(&scope, Some(&fingerprint));
        let mut bound = scope;
        bound.push(SEPARATOR);
        bound.push_str(&fingerprint);
        Some(Bound {
            scope: bound,
            changed,
            fingerprinted: true,
        })
    }

    /// 128 bits of HMAC-SHA-256 of `credentials`, in hex.
    fn fingerprint(&self, credentials: &str) -> String {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(credentials.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Whether `fingerprint` differs from the one `scope`'s previous
    /// request had, remembered as it goes.
    fn changed(&self, scope: &str, fingerprint: Option<&str>) -> bool {
        let scope = hash_of(scope);
        let fingerprint = fingerprint.map_or(0, hash_of);
        let mut latest = lock(&self.latest);
        if latest.len() >= MAX_REMEMBERED_SCOPES && !latest.contains_key(&scope) {
            latest.clear();
        }
        latest
            .insert(scope, fingerprint)
            .is_some_and(|previous| previous != fingerprint)
    }
}

/// A request's scope, bound to its credentials.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) scope: String,
    /// The credentials differ from those of the scope's previous request.
    pub(crate) changed: bool,
    /// The scope carries a fingerprint of credentials.
    pub(crate) fingerprinted: bool,
}

impl Default for Binding {
    fn default() -> Self {
        Self::new(Some(BoxedExtractor::new(DefaultCredentials)))
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Binding")
            .field("credentials", &self.extractor.is_some())
            .field("shared_key", &self.shared_key)
            .finish_non_exhaustive()
    }
}

/// 32 bytes from four of std's randomly keyed SipHash states. Their keys
/// come from the operating system's randomness once per thread, and count
/// up from there: 128 bits that nobody outside the process can know.
fn random_key() -> Arc<[u8]> {
    let mut key = Vec::with_capacity(32);
    for round in 0u8..4 {
        let mut hasher = RandomState::new().build_hasher();
        round.hash(&mut hasher);
        std::process::id().hash(&mut hasher);
        key.extend_from_slice(&hasher.finish().to_le_bytes());
    }
    Arc::from(key)
}

fn hash_of(value: &str) -> u64 {
    // FNV-1a: the same in every call, cheap, and only tells values apart.
    value.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(authorization: Option<&str>) -> Parts {
        let mut request = http::Request::get("/mcp");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn credentials_partition_the_scope_by_a_fingerprint_and_never_hold_them() {
        let binding = Binding::default();
        let alice = binding
            .bind("s".into(), &parts(Some("Bearer alice")))
            .unwrap();
        let mallory = binding
            .bind("s".into(), &parts(Some("Bearer mallory")))
            .unwrap();
        let none = binding.bind("s".into(), &parts(None)).unwrap();
        assert_ne!(alice.scope, mallory.scope);
        assert_eq!(none.scope, "s");
        assert!(alice.scope.starts_with("s\u{1f}"));
        assert_eq!(alice.scope.len(), "s\u{1f}".len() + 32);
        assert!(!alice.scope.contains("alice"));
        let again = binding
            .bind("s".into(), &parts(Some("Bearer alice")))
            .unwrap();
        assert_eq!(again.scope, alice.scope);
    }

    #[test]
    fn a_given_key_makes_the_same_fingerprint_in_every_process() {
        let (mut one, mut two) = (Binding::default(), Binding::default());
        let request = parts(Some("Bearer alice"));
        let differ = |a: &Binding, b: &Binding| {
            a.bind("s".into(), &request).unwrap().scope
                != b.bind("s".into(), &request).unwrap().scope
        };
        assert!(differ(&one, &two), "random keys differ");
        one.set_key(b"shared secret");
        two.set_key(b"shared secret");
        assert!(!differ(&one, &two));
        two.set_key(b"another secret");
        assert!(differ(&one, &two));
    }

    #[test]
    fn a_scope_holding_the_separator_is_no_scope() {
        let binding = Binding::default();
        assert!(binding.bind("s\u{1f}0123".into(), &parts(None)).is_none());
    }

    #[test]
    fn a_change_of_credentials_within_a_scope_is_noticed() {
        let binding = Binding::default();
        let changed = |scope: &str, auth| binding.bind(scope.into(), &parts(auth)).unwrap().changed;
        assert!(!changed("s", Some("Bearer alice")), "the first request");
        assert!(!changed("s", Some("Bearer alice")));
        assert!(!changed("t", Some("Bearer bob")), "another scope's");
        assert!(changed("s", Some("Bearer mallory")));
        assert!(changed("s", None));
        assert!(!changed("s", None));
    }

    #[test]
    fn debug_shows_neither_key_nor_credentials() {
        let mut binding = Binding::default();
        binding.set_key(b"k3y-s3cr3t");
        let shown = format!("{binding:?}");
        assert!(
            !shown.contains("k3y") && !shown.contains("107, 51"),
            "{shown}"
        );
    }
}
