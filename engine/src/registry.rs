//! The registry: every kind of node a run may use, and the decoders that bring cached objects
//! back from disk.

use std::collections::HashMap;
use std::sync::Arc;

use crate::node::Node;
use crate::value::{DataType, Payload};

/// Turns bytes written by [`Payload::encode`] back into a payload.
pub type Decoder = fn(&[u8]) -> Result<Arc<dyn Payload>, String>;

/// Node kinds by name, and object decoders by data type.
#[derive(Default, Clone)]
pub struct Registry {
    nodes: HashMap<String, Arc<dyn Node>>,
    decoders: HashMap<DataType, Decoder>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a node kind; a later registration of the same kind replaces the earlier one.
    pub fn register(&mut self, node: impl Node + 'static) {
        let kind = node.spec().kind.clone();
        self.nodes.insert(kind, Arc::new(node));
    }

    /// Adds the decoder for cached objects of `data_type`.
    pub fn register_decoder(&mut self, data_type: DataType, decoder: Decoder) {
        self.decoders.insert(data_type, decoder);
    }

    /// The node kind named `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Node>> {
        self.nodes.get(kind)
    }

    /// The decoder for `data_type`.
    pub fn decoder(&self, data_type: DataType) -> Option<Decoder> {
        self.decoders.get(&data_type).copied()
    }

    /// All kind names, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// All nodes, sorted by category then kind.
    pub fn nodes_sorted(&self) -> Vec<&Arc<dyn Node>> {
        let mut nodes: Vec<&Arc<dyn Node>> = self.nodes.values().collect();
        nodes.sort_by(|a, b| {
            (&a.spec().category, &a.spec().kind).cmp(&(&b.spec().category, &b.spec().kind))
        });
        nodes
    }
}
