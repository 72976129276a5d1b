//! The databases of the store's LMDB environment: their names, their handles, and the layout
//! check done when the environment is opened.

use heed::types::Bytes;
use heed::{Database, Env, RoTxn, RwTxn, WithoutTls};

use super::codec::{self, SummaryRecord};
use super::keys::{self, OwnerKey};
use super::{StoreError, lmdb};

/// Spans: `owner ‖ start BE ‖ span id` → bincode `Span`.
pub const SPANS_DB: &str = "spans";
/// Time index for retention: `start BE ‖ span id ‖ owner` → empty.
pub const SPANS_BY_START_DB: &str = "spans_by_start";
/// Name index: `len ‖ namespace ‖ len ‖ name ‖ len ‖ uid` → empty.
pub const PODS_BY_NAME_DB: &str = "pods_by_name";
/// Per-owner summary: `owner` → bincode `SummaryRecord`.
pub const SUMMARIES_DB: &str = "pod_summaries";
/// Store metadata: `"layout"` → the layout fingerprint.
pub const META_DB: &str = "meta";
/// Named databases in the environment (LMDB's `max_dbs`).
pub const DATABASE_COUNT: u32 = 5;

const LAYOUT_KEY: &[u8] = b"layout";

type RawDatabase = Database<Bytes, Bytes>;

/// The handles of every database of the store (they are `Copy`).
#[derive(Clone, Copy)]
pub struct Tables {
    pub spans: RawDatabase,
    pub spans_by_start: RawDatabase,
    pub pods_by_name: RawDatabase,
    pub summaries: RawDatabase,
    meta: RawDatabase,
}

impl Tables {
    /// Opens (creating when missing) every database, and empties them all when the stored layout
    /// fingerprint is not the current one. Returns the tables and whether they were emptied.
    pub fn open(env: &Env<WithoutTls>) -> Result<(Self, bool), StoreError> {
        let mut wtxn = env.write_txn().map_err(lmdb("begin write transaction"))?;
        let create = |wtxn: &mut RwTxn<'_>, name: &'static str| {
            env.create_database(wtxn, Some(name))
                .map_err(lmdb("create database"))
        };
        let tables = Self {
            spans: create(&mut wtxn, SPANS_DB)?,
            spans_by_start: create(&mut wtxn, SPANS_BY_START_DB)?,
            pods_by_name: create(&mut wtxn, PODS_BY_NAME_DB)?,
            summaries: create(&mut wtxn, SUMMARIES_DB)?,
            meta: create(&mut wtxn, META_DB)?,
        };
        let cleared = tables.check_layout(&mut wtxn)?;
        wtxn.commit().map_err(lmdb("commit"))?;
        Ok((tables, cleared))
    }

    fn check_layout(&self, wtxn: &mut RwTxn<'_>) -> Result<bool, StoreError> {
        let current = codec::layout_fingerprint().map_err(|source| StoreError::Encode {
            record: "layout fingerprint",
            source,
        })?;
        let stored = self
            .meta
            .get(wtxn, LAYOUT_KEY)
            .map_err(lmdb("read layout"))?;
        if stored == Some(current.as_slice()) {
            return Ok(false);
        }
        let had_data = !self.spans.is_empty(wtxn).map_err(lmdb("count spans"))?;
        for db in [
            self.spans,
            self.spans_by_start,
            self.pods_by_name,
            self.summaries,
        ] {
            db.clear(wtxn).map_err(lmdb("clear database"))?;
        }
        self.meta
            .put(wtxn, LAYOUT_KEY, &current)
            .map_err(lmdb("write layout"))?;
        Ok(had_data)
    }

    /// The summary of an owner, if it has spans.
    pub fn summary(
        &self,
        txn: &RoTxn<'_>,
        owner: &OwnerKey,
    ) -> Result<Option<SummaryRecord>, StoreError> {
        self.summaries
            .get(txn, owner.as_bytes())
            .map_err(lmdb("read summary"))?
            .map(decode_summary)
            .transpose()
    }

    /// Writes an owner's summary and moves its name index entry from the name the summary had
    /// before (`previous`, `None` for a new owner) to the one it has now.
    pub fn put_summary(
        &self,
        wtxn: &mut RwTxn<'_>,
        owner: &OwnerKey,
        record: &SummaryRecord,
        previous: Option<&SummaryRecord>,
    ) -> Result<(), StoreError> {
        let renamed =
            previous.is_none_or(|p| p.namespace != record.namespace || p.name != record.name);
        if renamed {
            if let Some(previous) = previous {
                self.unindex_name(wtxn, owner, previous)?;
            }
            if let Some(key) = name_key(owner, record) {
                self.pods_by_name
                    .put(wtxn, &key, &[])
                    .map_err(lmdb("write name index"))?;
            }
        }
        let value = codec::encode_summary(record).map_err(|source| StoreError::Encode {
            record: "pod summary",
            source,
        })?;
        self.summaries
            .put(wtxn, owner.as_bytes(), &value)
            .map_err(lmdb("write summary"))
    }

    /// Deletes an owner's summary and its name index entry (its last span is gone).
    pub fn delete_summary(
        &self,
        wtxn: &mut RwTxn<'_>,
        owner: &OwnerKey,
        record: &SummaryRecord,
    ) -> Result<(), StoreError> {
        self.unindex_name(wtxn, owner, record)?;
        self.summaries
            .delete(wtxn, owner.as_bytes())
            .map_err(lmdb("delete summary"))?;
        Ok(())
    }

    fn unindex_name(
        &self,
        wtxn: &mut RwTxn<'_>,
        owner: &OwnerKey,
        record: &SummaryRecord,
    ) -> Result<(), StoreError> {
        if let Some(key) = name_key(owner, record) {
            self.pods_by_name
                .delete(wtxn, &key)
                .map_err(lmdb("delete name index"))?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn overwrite_layout(&self, wtxn: &mut RwTxn<'_>, layout: &[u8]) -> heed::Result<()> {
        self.meta.put(wtxn, LAYOUT_KEY, layout)
    }
}

/// The name index key of a pod that has a name; `None` for the unattributed owner, a pod known
/// only by its UID, or a name too long to index.
fn name_key(owner: &OwnerKey, record: &SummaryRecord) -> Option<Vec<u8>> {
    let uid = owner.uid()?;
    if record.namespace.is_empty() && record.name.is_empty() {
        return None;
    }
    keys::name_key(&record.namespace, &record.name, uid)
}

pub fn decode_summary(bytes: &[u8]) -> Result<SummaryRecord, StoreError> {
    codec::decode_summary(bytes).map_err(|source| StoreError::Decode {
        record: "pod summary",
        source,
    })
}
