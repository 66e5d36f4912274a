//! Suggested values for text inputs that name a catalog (Load's model files), fetched from the
//! caller's lookup once per catalog and kept until the user asks for a refresh.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// A function from a catalog name to the values it offers.
pub type LookupFn = dyn Fn(&str) -> Vec<String> + Send + Sync;

/// The caller's lookup: a catalog name to the values it offers (the CLI scans the model folders).
#[derive(Clone)]
pub struct CatalogLookup(pub Arc<LookupFn>);

impl std::fmt::Debug for CatalogLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogLookup")
    }
}

/// Cached catalog lists for one editor.
#[derive(Default)]
pub struct Catalog {
    lookup: Option<CatalogLookup>,
    lists: RefCell<HashMap<String, Vec<String>>>,
}

impl Catalog {
    /// A catalog over `lookup`; `None` offers nothing.
    pub fn new(lookup: Option<CatalogLookup>) -> Catalog {
        Catalog {
            lookup,
            lists: RefCell::new(HashMap::new()),
        }
    }

    /// The values of catalog `name` (looked up the first time it is asked for).
    pub fn names(&self, name: &str) -> Vec<String> {
        let Some(lookup) = &self.lookup else {
            return Vec::new();
        };
        self.lists
            .borrow_mut()
            .entry(name.to_owned())
            .or_insert_with(|| (lookup.0)(name))
            .clone()
    }

    /// Forgets the cached lists, so the next request looks again (files added or removed).
    pub fn refresh(&self) {
        self.lists.borrow_mut().clear();
    }
}
