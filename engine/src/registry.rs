//! The registry: every kind of node a run may use, and every data type their ports carry with
//! its documentation, colour and disk-cache decoder.

use std::collections::HashMap;
use std::sync::Arc;

use crate::node::Node;
use crate::value::{DataType, Payload};

/// Turns bytes written by [`Payload::encode`] back into a payload.
pub type Decoder = fn(&[u8]) -> Result<Arc<dyn Payload>, String>;

/// What the front ends and the disk cache need to know about a data type.
#[derive(Clone, Debug)]
pub struct TypeInfo {
    /// The type.
    pub data_type: DataType,
    /// What its values are, one sentence.
    pub doc: String,
    /// Wire and pin colour in the editor (sRGB).
    pub color: [u8; 3],
    /// Brings values back from the disk cache; `None` keeps them in memory only.
    pub decoder: Option<Decoder>,
}

impl TypeInfo {
    /// A type with its documentation and colour, kept in memory only.
    pub fn new(data_type: DataType, doc: &str, color: [u8; 3]) -> TypeInfo {
        TypeInfo {
            data_type,
            doc: doc.to_owned(),
            color,
            decoder: None,
        }
    }

    /// The same type, persisted in the disk cache through `decoder`.
    pub fn decoder(mut self, decoder: Decoder) -> TypeInfo {
        self.decoder = Some(decoder);
        self
    }
}

/// Why something could not be registered: a programming error in the crate that registers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two nodes with the same kind.
    #[error("node kind `{0}` is registered twice")]
    DuplicateKind(String),
    /// Two registrations of one data type.
    #[error("data type `{0}` is registered twice")]
    DuplicateType(String),
    /// A node whose port has a type nobody registered.
    #[error("node kind `{kind}` uses data type `{data_type}`, which is not registered")]
    UnknownType {
        /// The node kind.
        kind: String,
        /// The unregistered type.
        data_type: String,
    },
}

/// Node kinds by name, and data types by name.
#[derive(Clone)]
pub struct Registry {
    nodes: HashMap<String, Arc<dyn Node>>,
    types: HashMap<DataType, TypeInfo>,
}

impl Default for Registry {
    fn default() -> Registry {
        let literals = [
            (
                DataType::INT,
                "A 64-bit signed integer.",
                [0x6c, 0xa0, 0xdc],
            ),
            (DataType::FLOAT, "A 64-bit float.", [0x4f, 0xc1, 0xc6]),
            (DataType::BOOL, "A boolean.", [0xd0, 0x8c, 0xe0]),
            (DataType::TEXT, "A UTF-8 string.", [0xc8, 0xc8, 0x80]),
        ];
        Registry {
            nodes: HashMap::new(),
            types: literals
                .into_iter()
                .map(|(data_type, doc, color)| (data_type, TypeInfo::new(data_type, doc, color)))
                .collect(),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Registry {
    /// A registry that knows only the literal types.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a data type. Register a crate's types before the nodes that use them.
    pub fn register_type(&mut self, info: TypeInfo) -> Result<(), RegistryError> {
        if self.types.contains_key(&info.data_type) {
            return Err(RegistryError::DuplicateType(
                info.data_type.name().to_owned(),
            ));
        }
        self.types.insert(info.data_type, info);
        Ok(())
    }

    /// Adds a node kind. Its kind must be new and every port's type registered.
    pub fn register(&mut self, node: impl Node + 'static) -> Result<(), RegistryError> {
        let spec = node.spec();
        let kind = spec.kind.clone();
        if self.nodes.contains_key(&kind) {
            return Err(RegistryError::DuplicateKind(kind));
        }
        let port_types = spec
            .inputs
            .iter()
            .map(|i| i.data_type)
            .chain(spec.outputs.iter().map(|o| o.data_type));
        for data_type in port_types {
            if !self.types.contains_key(&data_type) {
                return Err(RegistryError::UnknownType {
                    kind,
                    data_type: data_type.name().to_owned(),
                });
            }
        }
        self.nodes.insert(kind, Arc::new(node));
        Ok(())
    }

    /// Adds the node kind `K` (see [`crate::NodeKind`]).
    pub fn register_kind<K: crate::NodeKind>(&mut self) -> Result<(), RegistryError> {
        self.register(crate::Kind::<K>::new())
    }

    /// The node kind named `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Node>> {
        self.nodes.get(kind)
    }

    /// What is known about `data_type`.
    pub fn type_info(&self, data_type: DataType) -> Option<&TypeInfo> {
        self.types.get(&data_type)
    }

    /// The registered type named `name`.
    pub fn type_named(&self, name: &str) -> Option<DataType> {
        self.types.keys().find(|t| t.name() == name).copied()
    }

    /// Every registered type: the literal types first, then the others by name.
    pub fn types(&self) -> Vec<&TypeInfo> {
        let mut types: Vec<&TypeInfo> = self.types.values().collect();
        types.sort_by_key(|t| (!t.data_type.is_literal(), t.data_type.name()));
        types
    }

    /// The decoder for `data_type`.
    pub fn decoder(&self, data_type: DataType) -> Option<Decoder> {
        self.types.get(&data_type).and_then(|t| t.decoder)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{FnNode, Outputs};
    use crate::spec::{NodeSpec, OutputSpec};

    fn node(kind: &str, output: DataType) -> FnNode {
        FnNode::new(
            NodeSpec::new(kind, "test", "a test node")
                .output(OutputSpec::new("out", output, "out")),
            |_, _| Ok(Outputs::new()),
        )
    }

    #[test]
    fn duplicate_kinds_and_types_and_unregistered_types_are_errors() {
        let mut registry = Registry::new();
        registry.register(node("A", DataType::INT)).unwrap();
        assert_eq!(
            registry.register(node("A", DataType::TEXT)),
            Err(RegistryError::DuplicateKind("A".into()))
        );
        let picture = DataType::new("Picture");
        assert_eq!(
            registry.register(node("B", picture)),
            Err(RegistryError::UnknownType {
                kind: "B".into(),
                data_type: "Picture".into()
            })
        );
        registry
            .register_type(TypeInfo::new(picture, "A picture.", [1, 2, 3]))
            .unwrap();
        registry.register(node("B", picture)).unwrap();
        assert_eq!(
            registry.register_type(TypeInfo::new(picture, "Again.", [1, 2, 3])),
            Err(RegistryError::DuplicateType("Picture".into()))
        );
        assert_eq!(registry.type_named("Picture"), Some(picture));
        let names: Vec<&str> = registry
            .types()
            .iter()
            .map(|t| t.data_type.name())
            .collect();
        assert_eq!(names, ["Bool", "Float", "Int", "Text", "Picture"]);
    }
}
