//! The model pool: loaded models shared across nodes and runs, bounded by a memory budget.
//!
//! Models are keyed by a string the loader builds from (path, dtype, device, file identity),
//! so an edited checkpoint is a new key. The pool stores `Arc<dyn Any>` and never names a
//! model type; a typed helper in the node crate downcasts. Eviction only drops the pool's
//! handle: a model still used by a running node stays alive until that node lets go.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

type Shared = Arc<dyn Any + Send + Sync>;

struct Entry {
    model: Shared,
    size_bytes: u64,
    last_used_tick: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    tick: u64,
}

/// Loaded models, least recently used evicted first when over budget.
pub struct ModelPool {
    inner: Mutex<Inner>,
    budget_bytes: u64,
}

/// Budget when the physical memory cannot be read.
const FALLBACK_BUDGET_BYTES: u64 = 16 << 30;

impl Default for ModelPool {
    /// A pool bounded by [`ModelPool::default_budget_bytes`].
    fn default() -> ModelPool {
        ModelPool::new(ModelPool::default_budget_bytes())
    }
}

impl std::fmt::Debug for ModelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPool")
            .field("budget_bytes", &self.budget_bytes)
            .field("resident_bytes", &self.resident_bytes())
            .finish()
    }
}

/// Memory the operating system says is available now (free plus reclaimable), if it can say.
/// Nodes compare large working sets against it to refuse work that would exhaust memory instead
/// of being killed halfway.
pub fn available_memory_bytes() -> Option<u64> {
    let mut system = sysinfo::System::new().ok()?;
    system.refresh_memory();
    match system.available_memory() {
        0 => None,
        available => Some(available),
    }
}

impl ModelPool {
    /// Half of the machine's physical memory (16 GiB if it cannot be read): room for the models
    /// of a run and for the activations and caches beside them.
    pub fn default_budget_bytes() -> u64 {
        let Ok(mut system) = sysinfo::System::new() else {
            return FALLBACK_BUDGET_BYTES;
        };
        system.refresh_memory();
        match system.total_memory() {
            0 => FALLBACK_BUDGET_BYTES,
            total => total / 2,
        }
    }

    /// The most bytes of models kept resident.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// A pool that keeps at most `budget_bytes` of models resident.
    pub fn new(budget_bytes: u64) -> ModelPool {
        ModelPool {
            inner: Mutex::new(Inner::default()),
            budget_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (every update is a single insert or remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The model under `key`, loading it with `load` (which returns the model and its size in
    /// bytes) if it is not resident. Loading happens outside the lock.
    pub fn get_or_load<T, E>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<(T, u64), E>,
    ) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        if let Some(model) = self.get::<T>(key) {
            return Ok(model);
        }
        let (model, size_bytes) = load()?;
        let model = Arc::new(model);
        self.insert(key, model.clone(), size_bytes);
        Ok(model)
    }

    /// The resident model under `key`, if it is a `T`.
    pub fn get<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(key)?;
        entry.last_used_tick = tick;
        entry.model.clone().downcast::<T>().ok()
    }

    /// Makes `model` resident under `key`, evicting least recently used models to stay within
    /// budget. A model larger than the whole budget is still kept (alone): refusing it would
    /// only make every run load it again.
    pub fn insert(&self, key: &str, model: Shared, size_bytes: u64) {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        inner.entries.insert(
            key.to_owned(),
            Entry {
                model,
                size_bytes,
                last_used_tick: tick,
            },
        );
        loop {
            let resident: u64 = inner.entries.values().map(|e| e.size_bytes).sum();
            if resident <= self.budget_bytes || inner.entries.len() <= 1 {
                break;
            }
            let oldest = inner
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, e)| e.last_used_tick)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => {
                    inner.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// Drops the pool's handles of every model whose key starts with `prefix` (a model part's
    /// placements before it is placed anew; nodes holding one keep it until they let go).
    pub fn remove_prefix(&self, prefix: &str) {
        self.lock()
            .entries
            .retain(|key, _| !key.starts_with(prefix));
    }

    /// Drops the pool's handles of every model whose key fails `keep` (placements of parts a
    /// new plan no longer has).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().entries.retain(|key, _| keep(key));
    }

    /// Bytes of models currently resident.
    pub fn resident_bytes(&self) -> u64 {
        self.lock().entries.values().map(|e| e.size_bytes).sum()
    }

    /// Keys of resident models, sorted.
    pub fn resident_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().entries.keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pool_is_bounded_by_physical_memory() {
        let pool = ModelPool::default();
        assert!(pool.budget_bytes() < u64::MAX);
        assert!(pool.budget_bytes() >= 1 << 20);
    }

    #[test]
    fn loads_once_and_evicts_least_recently_used_over_budget() {
        let pool = ModelPool::new(100);
        let mut loads = 0;
        let a = pool.get_or_load::<u32, ()>("a", || {
            loads += 1;
            Ok((1, 60))
        });
        assert_eq!(*a.unwrap(), 1);
        let again = pool.get_or_load::<u32, ()>("a", || {
            loads += 1;
            Ok((1, 60))
        });
        assert_eq!(*again.unwrap(), 1);
        assert_eq!(loads, 1);
        pool.get_or_load::<u32, ()>("b", || Ok((2, 60))).unwrap();
        assert_eq!(pool.resident_keys(), vec!["b".to_owned()]);
    }

    #[test]
    fn eviction_never_frees_a_model_a_node_still_holds() {
        let pool = ModelPool::new(100);
        let held = pool
            .get_or_load::<Vec<u8>, ()>("a", || Ok((vec![7; 4], 60)))
            .unwrap();
        pool.get_or_load::<Vec<u8>, ()>("b", || Ok((vec![1; 4], 60)))
            .unwrap();
        // `a` left the pool but the running node's handle still reads it.
        assert_eq!(pool.resident_keys(), vec!["b".to_owned()]);
        assert_eq!(*held, vec![7; 4]);
        assert_eq!(pool.resident_bytes(), 60);
    }

    #[test]
    fn removing_a_prefix_drops_only_those_placements() {
        let pool = ModelPool::new(u64::MAX);
        for key in ["m/transformer|1", "m/transformer|2", "m/text_encoder|1"] {
            pool.insert(key, Arc::new(0u8), 1);
        }
        pool.remove_prefix("m/transformer|");
        assert_eq!(pool.resident_keys(), vec!["m/text_encoder|1".to_owned()]);
        pool.retain(|key| !key.starts_with("m/text_encoder"));
        assert!(pool.resident_keys().is_empty());
    }
}
