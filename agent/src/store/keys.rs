//! Byte encodings of the store's keys: fixed-width big-endian times and ids, length-prefixed
//! strings, so that byte order is time order and no two distinct keys can collide.

use crate::model::{Span, SpanId};

/// Longest pod UID the store keeps (Kubernetes makes 36-byte UUIDs).
pub const MAX_UID_LEN: usize = 128;
/// Longest namespace the name index keeps (a Kubernetes DNS label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest pod name the name index keeps (a Kubernetes DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;

const UNATTRIBUTED_TAG: u8 = 0;
const POD_TAG: u8 = 1;
const TIME_LEN: usize = 8;
const SPAN_ID_LEN: usize = 8;

/// Whose spans a key holds: a pod, by UID, or the reserved owner of the spans no pod could be
/// found for.
///
/// Encoded as `0x00` (unattributed) or `0x01 ‖ len:u8 ‖ uid`. The encoding is prefix-free, so one
/// owner's range of keys never contains another owner's keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerKey(Vec<u8>);

impl OwnerKey {
    pub fn unattributed() -> Self {
        Self(vec![UNATTRIBUTED_TAG])
    }

    /// The key of a pod; `None` when the UID is longer than [`MAX_UID_LEN`].
    pub fn pod(uid: &str) -> Option<Self> {
        let mut out = vec![POD_TAG];
        push_str(&mut out, uid, MAX_UID_LEN)?;
        Some(Self(out))
    }

    /// The owner of a span; `None` when its pod UID is too long to be a key.
    pub fn of(span: &Span) -> Option<Self> {
        match &span.pod {
            Some(pod) => Self::pod(&pod.uid),
            None => Some(Self::unattributed()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The pod UID, `None` for the unattributed owner.
    pub fn uid(&self) -> Option<&str> {
        match self.0.split_first() {
            // Only `pod` and `split_front` build pod keys, and both validate the UID.
            Some((&POD_TAG, rest)) => rest.get(1..).and_then(|uid| std::str::from_utf8(uid).ok()),
            _ => None,
        }
    }

    /// Reads an owner key from the front of `bytes`, returning it and the bytes after it.
    pub fn split_front(bytes: &[u8]) -> Option<(Self, &[u8])> {
        match bytes.split_first()? {
            (&UNATTRIBUTED_TAG, rest) => Some((Self::unattributed(), rest)),
            (&POD_TAG, rest) => {
                let (uid, rest) = read_str(rest)?;
                Some((Self::pod(uid)?, rest))
            }
            _ => None,
        }
    }
}

/// Key of the `spans` database: `owner ‖ start:u64 BE ‖ span id`.
pub fn span_key(owner: &OwnerKey, start_unix_ns: u64, span_id: SpanId) -> Vec<u8> {
    let mut out = Vec::with_capacity(owner.0.len() + TIME_LEN + SPAN_ID_LEN);
    out.extend_from_slice(&owner.0);
    out.extend_from_slice(&start_unix_ns.to_be_bytes());
    out.extend_from_slice(&span_id.0);
    out
}

/// Inclusive bounds of the `spans` keys of `owner` whose start is in `[first, last]`.
pub fn span_range(owner: &OwnerKey, first: u64, last: u64) -> (Vec<u8>, Vec<u8>) {
    (
        span_key(owner, first, SpanId([0; SPAN_ID_LEN])),
        span_key(owner, last, SpanId([u8::MAX; SPAN_ID_LEN])),
    )
}

/// The start time in a `spans` key of the given owner.
pub fn span_key_start(owner: &OwnerKey, key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(owner.as_bytes())?;
    read_u64(rest.get(..TIME_LEN)?)
}

/// Key of the time index: `start:u64 BE ‖ span id ‖ owner`. The owner is part of the key (the
/// value is empty) so that two spans that share a start and an id in different pods both have an
/// entry, and retention never leaves a span behind.
pub fn time_key(start_unix_ns: u64, span_id: SpanId, owner: &OwnerKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(TIME_LEN + SPAN_ID_LEN + owner.0.len());
    out.extend_from_slice(&start_unix_ns.to_be_bytes());
    out.extend_from_slice(&span_id.0);
    out.extend_from_slice(&owner.0);
    out
}

/// A decoded time-index key.
#[derive(Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub start_unix_ns: u64,
    pub span_id: SpanId,
    pub owner: OwnerKey,
}

impl TimeEntry {
    pub fn decode(key: &[u8]) -> Option<Self> {
        let start_unix_ns = read_u64(key.get(..TIME_LEN)?)?;
        let span_id = SpanId(key.get(TIME_LEN..TIME_LEN + SPAN_ID_LEN)?.try_into().ok()?);
        let (owner, rest) = OwnerKey::split_front(key.get(TIME_LEN + SPAN_ID_LEN..)?)?;
        rest.is_empty().then_some(Self {
            start_unix_ns,
            span_id,
            owner,
        })
    }

    /// The key of the span this entry points at.
    pub fn span_key(&self) -> Vec<u8> {
        span_key(&self.owner, self.start_unix_ns, self.span_id)
    }
}

/// Prefix of the name index keys of one pod name: `len:u8 ‖ namespace ‖ len:u8 ‖ name`; `None`
/// when a part is longer than Kubernetes allows.
pub fn name_prefix(namespace: &str, name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(2 + namespace.len() + name.len());
    push_str(&mut out, namespace, MAX_NAMESPACE_LEN)?;
    push_str(&mut out, name, MAX_NAME_LEN)?;
    Some(out)
}

/// Key of the name index: the name prefix followed by `len:u8 ‖ uid`; the value is empty.
pub fn name_key(namespace: &str, name: &str, uid: &str) -> Option<Vec<u8>> {
    let mut out = name_prefix(namespace, name)?;
    push_str(&mut out, uid, MAX_UID_LEN)?;
    Some(out)
}

/// The UID at the end of a name index key that starts with `prefix`.
pub fn name_key_uid<'k>(prefix: &[u8], key: &'k [u8]) -> Option<&'k str> {
    let (uid, rest) = read_str(key.strip_prefix(prefix)?)?;
    rest.is_empty().then_some(uid)
}

fn push_str(out: &mut Vec<u8>, value: &str, max: usize) -> Option<()> {
    if value.len() > max {
        return None;
    }
    out.push(u8::try_from(value.len()).ok()?);
    out.extend_from_slice(value.as_bytes());
    Some(())
}

fn read_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    let value = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((value, rest.get(len..)?))
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> OwnerKey {
        OwnerKey::pod(uid).expect("short uid")
    }

    #[test]
    fn span_keys_sort_by_start_across_byte_boundaries() {
        let owner = pod("uid-a");
        let times = [0_u64, 255, 256, 65_535, 65_536, 1 << 40, u64::MAX];
        let keys: Vec<_> = times
            .iter()
            .map(|&t| span_key(&owner, t, SpanId([0xff; 8])))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn one_pods_range_never_holds_another_pods_keys() {
        let (lo, hi) = span_range(&pod("a"), 0, u64::MAX);
        for other in [pod("ab"), pod(""), OwnerKey::unattributed(), pod("b")] {
            let key = span_key(&other, 7, SpanId([1; 8]));
            assert!(
                !(lo <= key && key <= hi),
                "{other:?} falls in the range of pod a"
            );
        }
        let own = span_key(&pod("a"), u64::MAX, SpanId([0xff; 8]));
        assert!(lo <= own && own <= hi);
    }

    #[test]
    fn name_keys_do_not_collide_on_concatenation() {
        assert_ne!(name_key("ab", "c", "u"), name_key("a", "bc", "u"));
        assert_ne!(name_prefix("ns", "web"), name_prefix("ns", "we"));
        let prefix = name_prefix("ns", "web").expect("short");
        let key = name_key("ns", "web-1", "u").expect("short");
        assert_eq!(name_key_uid(&prefix, &key), None);
    }

    #[test]
    fn time_entries_round_trip() {
        for owner in [pod("0f1e2d3c-4b5a"), OwnerKey::unattributed()] {
            let key = time_key(42, SpanId([9; 8]), &owner);
            let entry = TimeEntry::decode(&key).expect("decodes");
            assert_eq!(entry.start_unix_ns, 42);
            assert_eq!(entry.span_id, SpanId([9; 8]));
            assert_eq!(entry.span_key(), span_key(&owner, 42, SpanId([9; 8])));
            assert_eq!(span_key_start(&owner, &entry.span_key()), Some(42));
        }
        assert_eq!(TimeEntry::decode(&[0; 10]), None);
    }

    #[test]
    fn over_long_fields_are_refused() {
        assert!(OwnerKey::pod(&"u".repeat(MAX_UID_LEN + 1)).is_none());
        assert!(name_prefix(&"n".repeat(MAX_NAMESPACE_LEN + 1), "x").is_none());
        assert_eq!(pod("abc").uid(), Some("abc"));
        assert_eq!(OwnerKey::unattributed().uid(), None);
    }
}
