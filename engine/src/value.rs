//! Values that flow along links, and the data types they can have.
//!
//! Literals (`Int`, `Float`, `Bool`, `Text`) are held inline; everything else (models,
//! tensors, images) is an [`Object`]: a registered data type plus an opaque, reference-counted
//! payload.
//! The engine never knows what is inside a payload; it only asks for its size (for the
//! memory cache) and, optionally, for bytes (for the disk cache).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// The type of a port, by name.
///
/// The literal types (`Int`, `Float`, `Bool`, `Text`) are the engine's own: workflow files write
/// their values inline. Every other type belongs to the crate that defines nodes using it, which
/// registers it with its documentation, colour and disk-cache decoder ([`crate::TypeInfo`]); the
/// engine only compares names, so a new model family adds its types without touching the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataType(&'static str);

impl Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl DataType {
    /// A 64-bit signed integer.
    pub const INT: DataType = DataType("Int");
    /// A 64-bit float.
    pub const FLOAT: DataType = DataType("Float");
    /// A boolean.
    pub const BOOL: DataType = DataType("Bool");
    /// A UTF-8 string.
    pub const TEXT: DataType = DataType("Text");
    /// The literal types, in a stable order.
    pub const LITERALS: [DataType; 4] = [
        DataType::INT,
        DataType::FLOAT,
        DataType::BOOL,
        DataType::TEXT,
    ];

    /// The type named `name` (register it with [`crate::Registry::register_type`]).
    pub const fn new(name: &'static str) -> DataType {
        DataType(name)
    }

    /// The name used in specs, docs and diagnostics.
    pub fn name(self) -> &'static str {
        self.0
    }

    /// Whether a workflow file can write a value of this type inline.
    pub fn is_literal(self) -> bool {
        DataType::LITERALS.contains(&self)
    }

    /// The one connection rule, shared by validation and the editor: may an output of type
    /// `from` feed an input of this type?
    pub fn accepts(self, from: DataType) -> bool {
        self == from
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The contents of an [`Object`]: anything a node produces that is not a literal.
pub trait Payload: Any + Send + Sync + fmt::Debug {
    /// Bytes this value keeps alive, for the memory budget of the cache.
    fn size_bytes(&self) -> u64;

    /// A self-contained encoding for the disk cache, or `None` if this value lives only in
    /// memory (model handles, device tensors that are not worth copying back).
    fn encode(&self) -> Option<Vec<u8>> {
        None
    }
}

/// A typed, opaque, cheaply clonable value.
#[derive(Clone, Debug)]
pub struct Object {
    data_type: DataType,
    payload: Arc<dyn Payload>,
}

impl Object {
    /// Wraps a payload as a value of `data_type`.
    pub fn new<P: Payload>(data_type: DataType, payload: P) -> Object {
        Object {
            data_type,
            payload: Arc::new(payload),
        }
    }

    /// Wraps an already shared payload.
    pub fn from_arc(data_type: DataType, payload: Arc<dyn Payload>) -> Object {
        Object { data_type, payload }
    }

    /// The data type this value was created as.
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// The payload, if it is a `T`.
    pub fn downcast_ref<T: Payload>(&self) -> Option<&T> {
        let any: &dyn Any = self.payload.as_ref();
        any.downcast_ref::<T>()
    }

    /// A shared handle to the payload, if it is a `T`.
    pub fn downcast_arc<T: Payload>(&self) -> Option<Arc<T>> {
        let any: Arc<dyn Any + Send + Sync> = self.payload.clone();
        any.downcast::<T>().ok()
    }

    /// The payload as the engine sees it.
    pub fn payload(&self) -> &Arc<dyn Payload> {
        &self.payload
    }
}

/// A value on a port.
#[derive(Clone, Debug)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string, shared.
    Text(Arc<str>),
    /// Anything else.
    Object(Object),
}

impl Value {
    /// The data type of this value.
    pub fn data_type(&self) -> DataType {
        match self {
            Value::Int(_) => DataType::INT,
            Value::Float(_) => DataType::FLOAT,
            Value::Bool(_) => DataType::BOOL,
            Value::Text(_) => DataType::TEXT,
            Value::Object(object) => object.data_type(),
        }
    }

    /// Bytes this value keeps alive.
    pub fn size_bytes(&self) -> u64 {
        match self {
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => 8,
            Value::Text(text) => text.len() as u64,
            Value::Object(object) => object.payload.size_bytes(),
        }
    }
}

impl From<&Literal> for Value {
    fn from(literal: &Literal) -> Value {
        match literal {
            Literal::Int(v) => Value::Int(*v),
            Literal::Float(v) => Value::Float(*v),
            Literal::Bool(v) => Value::Bool(*v),
            Literal::Text(v) => Value::Text(Arc::from(v.as_str())),
        }
    }
}

/// A value that can be written inline in a workflow file or a node spec's default.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Literal {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Text(String),
}

impl Literal {
    /// The data type of this literal.
    pub fn data_type(&self) -> DataType {
        match self {
            Literal::Int(_) => DataType::INT,
            Literal::Float(_) => DataType::FLOAT,
            Literal::Bool(_) => DataType::BOOL,
            Literal::Text(_) => DataType::TEXT,
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(v) => write!(f, "Int({v})"),
            Literal::Float(v) => write!(f, "Float({v:?})"),
            Literal::Bool(v) => write!(f, "Bool({v})"),
            Literal::Text(v) => write!(f, "Text({v:?})"),
        }
    }
}
