//! Output caching: fingerprints, an in-memory LRU bounded in bytes, and an on-disk store.
//!
//! A node's fingerprint is a blake3 hash over its kind, spec version, literal inputs, the
//! fingerprints (and output numbers) of the nodes it links from, and the identity of files it
//! reads. Changing one input therefore changes exactly the fingerprints downstream of it
//! (a Merkle key), and tensors never need hashing.
//!
//! Disk entries are self-checking: a trailing blake3 of the body. A corrupt, truncated or
//! undecodable entry is treated as a miss, deleted and rebuilt; it never fails a run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::registry::Registry;
use crate::value::{DataType, Object, Value};

/// The key of a node's outputs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex().get(..16).unwrap_or(""))
    }
}

/// Outputs of one node, in spec order.
pub type NodeOutputs = Arc<[Value]>;

struct MemoryEntry {
    outputs: NodeOutputs,
    size_bytes: u64,
    tick: u64,
}

/// In-memory cache, least recently used evicted first, bounded in bytes.
pub struct MemoryCache {
    entries: HashMap<Fingerprint, MemoryEntry>,
    by_age: BTreeMap<u64, Fingerprint>,
    tick: u64,
    used_bytes: u64,
    budget_bytes: u64,
}

impl MemoryCache {
    /// An empty cache holding at most `budget_bytes`.
    pub fn new(budget_bytes: u64) -> MemoryCache {
        MemoryCache {
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            tick: 0,
            used_bytes: 0,
            budget_bytes,
        }
    }

    /// The outputs under `fingerprint`, marking them recently used.
    pub fn get(&mut self, fingerprint: &Fingerprint) -> Option<NodeOutputs> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(fingerprint)?;
        self.by_age.remove(&entry.tick);
        entry.tick = tick;
        self.by_age.insert(tick, *fingerprint);
        Some(entry.outputs.clone())
    }

    /// Stores outputs, evicting old entries to stay within budget. Outputs larger than the
    /// whole budget are not stored.
    pub fn insert(&mut self, fingerprint: Fingerprint, outputs: NodeOutputs) {
        let size_bytes: u64 = outputs.iter().map(Value::size_bytes).sum::<u64>() + 64;
        if size_bytes > self.budget_bytes {
            return;
        }
        self.remove(&fingerprint);
        while self.used_bytes + size_bytes > self.budget_bytes {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.used_bytes -= entry.size_bytes;
            }
        }
        self.tick += 1;
        self.by_age.insert(self.tick, fingerprint);
        self.used_bytes += size_bytes;
        self.entries.insert(
            fingerprint,
            MemoryEntry {
                outputs,
                size_bytes,
                tick: self.tick,
            },
        );
    }

    fn remove(&mut self, fingerprint: &Fingerprint) {
        if let Some(entry) = self.entries.remove(fingerprint) {
            self.by_age.remove(&entry.tick);
            self.used_bytes -= entry.size_bytes;
        }
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

const MAGIC: &[u8; 8] = b"VTCACHE3";
const CHECKSUM_LEN: usize = 32;

/// Outputs persisted as files, one per fingerprint, surviving restarts.
#[derive(Clone, Debug)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// A disk cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> DiskCache {
        DiskCache { dir: dir.into() }
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `fingerprint` lives.
    pub fn entry_path(&self, fingerprint: &Fingerprint) -> PathBuf {
        let hex = fingerprint.to_hex();
        self.dir
            .join(hex.get(..2).unwrap_or("00"))
            .join(format!("{hex}.vtc"))
    }

    /// Reads the entry for `fingerprint`. Missing, corrupt or undecodable entries are a miss;
    /// corrupt ones are deleted so they are rebuilt.
    pub fn load(&self, fingerprint: &Fingerprint, registry: &Registry) -> Option<Vec<Value>> {
        let path = self.entry_path(fingerprint);
        let bytes = std::fs::read(&path).ok()?;
        match decode_entry(&bytes, fingerprint, registry) {
            Some(values) => {
                // Mark it recently used, so trimming removes entries nobody reads first.
                if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(std::time::SystemTime::now());
                }
                Some(values)
            }
            None => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the entry for `fingerprint` if every value can be encoded. Returns whether it
    /// was written. The write is atomic: readers see the old state or the whole new entry.
    pub fn store(&self, fingerprint: &Fingerprint, outputs: &[Value]) -> std::io::Result<bool> {
        let Some(bytes) = encode_entry(fingerprint, outputs) else {
            return Ok(false);
        };
        let path = self.entry_path(fingerprint);
        let Some(parent) = path.parent() else {
            return Ok(false);
        };
        std::fs::create_dir_all(parent)?;
        let mut file = tempfile::NamedTempFile::new_in(parent)?;
        file.write_all(&bytes)?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|err| err.error)?;
        Ok(true)
    }
}

impl DiskCache {
    /// Deletes the least recently used entries until the cache holds at most `max_bytes`.
    /// Returns the bytes removed. Entries that cannot be inspected are left alone.
    pub fn trim(&self, max_bytes: u64) -> u64 {
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
        let Ok(shards) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_none_or(|ext| ext != "vtc") {
                    continue;
                }
                if let Ok(meta) = file.metadata() {
                    let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    entries.push((used, meta.len(), path));
                }
            }
        }
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        let mut removed = 0;
        for (_, len, path) in entries {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                removed += len;
            }
        }
        removed
    }
}

/// An entry: magic, the fingerprint it answers (so an entry copied or renamed to another key is
/// refused, not served), the values, and a checksum over all of it.
fn encode_entry(fingerprint: &Fingerprint, outputs: &[Value]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&fingerprint.0);
    body.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
    for value in outputs {
        let payload: Vec<u8> = match value {
            Value::Int(v) => v.to_le_bytes().to_vec(),
            Value::Float(v) => v.to_bits().to_le_bytes().to_vec(),
            Value::Bool(v) => vec![u8::from(*v)],
            Value::Text(v) => v.as_bytes().to_vec(),
            Value::Object(object) => object.payload().encode()?,
        };
        let name = value.data_type().name().as_bytes();
        body.push(u8::try_from(name.len()).ok()?);
        body.extend_from_slice(name);
        body.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        body.extend_from_slice(&payload);
    }
    let checksum = blake3::hash(&body);
    body.extend_from_slice(checksum.as_bytes());
    Some(body)
}

fn decode_entry(
    bytes: &[u8],
    fingerprint: &Fingerprint,
    registry: &Registry,
) -> Option<Vec<Value>> {
    let body_len = bytes.len().checked_sub(CHECKSUM_LEN)?;
    let (body, checksum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != checksum {
        return None;
    }
    let mut reader = Reader { bytes: body };
    if reader.take(MAGIC.len())? != MAGIC || reader.take(fingerprint.0.len())? != fingerprint.0 {
        return None;
    }
    let count = u32::from_le_bytes(reader.take(4)?.try_into().ok()?);
    let mut values = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let name_len = usize::from(*reader.take(1)?.first()?);
        let name = std::str::from_utf8(reader.take(name_len)?).ok()?;
        let len = usize::try_from(u64::from_le_bytes(reader.take(8)?.try_into().ok()?)).ok()?;
        let payload = reader.take(len)?;
        let data_type = registry.type_named(name)?;
        let value = match data_type {
            DataType::INT => Value::Int(i64::from_le_bytes(payload.try_into().ok()?)),
            DataType::FLOAT => {
                Value::Float(f64::from_bits(u64::from_le_bytes(payload.try_into().ok()?)))
            }
            DataType::BOOL => Value::Bool(*payload.first()? != 0),
            DataType::TEXT => Value::Text(Arc::from(std::str::from_utf8(payload).ok()?)),
            other => {
                let decoder = registry.decoder(other)?;
                Value::Object(Object::from_arc(other, decoder(payload).ok()?))
            }
        };
        values.push(value);
    }
    if !reader.bytes.is_empty() {
        return None;
    }
    Some(values)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(byte: u8) -> Fingerprint {
        Fingerprint([byte; 32])
    }

    fn ints(values: &[i64]) -> NodeOutputs {
        values.iter().map(|v| Value::Int(*v)).collect()
    }

    #[test]
    fn memory_cache_evicts_least_recently_used_when_over_budget() {
        // Each entry of one Int costs 8 + 64 bytes of bookkeeping.
        let mut cache = MemoryCache::new(3 * 72);
        cache.insert(fp(1), ints(&[1]));
        cache.insert(fp(2), ints(&[2]));
        cache.insert(fp(3), ints(&[3]));
        assert!(cache.get(&fp(1)).is_some());
        cache.insert(fp(4), ints(&[4]));
        assert!(cache.get(&fp(2)).is_none(), "2 was least recently used");
        assert!(cache.get(&fp(1)).is_some());
        assert!(cache.get(&fp(3)).is_some());
        assert!(cache.get(&fp(4)).is_some());
        assert_eq!(cache.used_bytes(), 3 * 72);
    }

    #[test]
    fn trimming_removes_least_recently_used_entries_first() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::new(dir.path());
        let blob = |n: i64| {
            vec![
                Value::Text(Arc::from("x".repeat(1000).as_str())),
                Value::Int(n),
            ]
        };
        for byte in 1..=3u8 {
            disk.store(&fp(byte), &blob(i64::from(byte))).unwrap();
            let path = disk.entry_path(&fp(byte));
            let age = std::time::Duration::from_secs(100 * u64::from(4 - byte));
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(std::time::SystemTime::now() - age)
                .unwrap();
        }
        // Reading entry 1 makes it the most recently used.
        assert!(disk.load(&fp(1), &Registry::new()).is_some());
        let entry_bytes = std::fs::metadata(disk.entry_path(&fp(1))).unwrap().len();
        let removed = disk.trim(2 * entry_bytes);
        assert_eq!(removed, entry_bytes);
        assert!(
            !disk.entry_path(&fp(2)).exists(),
            "2 was least recently used"
        );
        assert!(disk.entry_path(&fp(1)).exists());
        assert!(disk.entry_path(&fp(3)).exists());
    }

    #[test]
    fn disk_entry_round_trips_and_rejects_any_flipped_byte() {
        let outputs = vec![
            Value::Int(-7),
            Value::Float(0.1),
            Value::Bool(true),
            Value::Text(Arc::from("hé")),
        ];
        let bytes = encode_entry(&fp(9), &outputs).unwrap();
        let registry = Registry::new();
        let back = decode_entry(&bytes, &fp(9), &registry).unwrap();
        assert_eq!(format!("{back:?}"), format!("{outputs:?}"));
        for idx in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[idx] ^= 0x40;
            assert!(
                decode_entry(&corrupt, &fp(9), &registry).is_none(),
                "flip at {idx} accepted"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode_entry(&bytes[..len], &fp(9), &registry).is_none(),
                "truncation to {len} accepted"
            );
        }
    }

    #[test]
    fn an_entry_copied_under_another_key_is_a_miss() {
        // A valid entry for one key must not answer another: a seed-7 picture served for a
        // seed-42 request would carry the wrong workflow.
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::new(dir.path());
        let registry = Registry::new();
        disk.store(&fp(7), &[Value::Int(7)]).unwrap();
        std::fs::create_dir_all(disk.entry_path(&fp(42)).parent().unwrap()).unwrap();
        std::fs::copy(disk.entry_path(&fp(7)), disk.entry_path(&fp(42))).unwrap();
        assert!(disk.load(&fp(42), &registry).is_none());
        assert!(
            !disk.entry_path(&fp(42)).exists(),
            "the misplaced entry is removed"
        );
        assert!(disk.load(&fp(7), &registry).is_some());
    }
}
