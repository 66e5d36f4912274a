//! Values that flow along links, and the closed set of data types they can have.
//!
//! Literals (`Int`, `Float`, `Bool`, `Text`) are held inline; everything else (models,
//! tensors, images) is an [`Object`]: a data type plus an opaque, reference-counted payload.
//! The engine never knows what is inside a payload; it only asks for its size (for the
//! memory cache) and, optionally, for bytes (for the disk cache).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// The type of a port. The set is closed: workflow files and the editor name these types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum DataType {
    /// A 64-bit signed integer.
    Int,
    /// A 64-bit float.
    Float,
    /// A boolean.
    Bool,
    /// A UTF-8 string.
    Text,
    /// A denoising model (transformer).
    Model,
    /// A text encoder with its tokenizer and chat template.
    TextEncoder,
    /// An image autoencoder.
    Vae,
    /// Text conditioning for a model.
    Conditioning,
    /// A latent image in the space the model samples in.
    Latent,
    /// An RGB image.
    Image,
    /// An ordered stack of RGBA layers, bottom to top.
    Layers,
}

impl DataType {
    /// Every data type, in a stable order.
    pub const ALL: [DataType; 11] = [
        DataType::Int,
        DataType::Float,
        DataType::Bool,
        DataType::Text,
        DataType::Model,
        DataType::TextEncoder,
        DataType::Vae,
        DataType::Conditioning,
        DataType::Latent,
        DataType::Image,
        DataType::Layers,
    ];

    /// The name used in workflow files, docs and diagnostics.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Int => "Int",
            DataType::Float => "Float",
            DataType::Bool => "Bool",
            DataType::Text => "Text",
            DataType::Model => "Model",
            DataType::TextEncoder => "TextEncoder",
            DataType::Vae => "Vae",
            DataType::Conditioning => "Conditioning",
            DataType::Latent => "Latent",
            DataType::Image => "Image",
            DataType::Layers => "Layers",
        }
    }

    /// Whether a workflow file can write a value of this type inline.
    pub fn is_literal(self) -> bool {
        matches!(
            self,
            DataType::Int | DataType::Float | DataType::Bool | DataType::Text
        )
    }

    /// The one connection rule, shared by validation and the editor: may an output of type
    /// `from` feed an input of this type?
    pub fn accepts(self, from: DataType) -> bool {
        self == from
    }

    /// A stable small number for the disk cache format.
    pub(crate) fn tag(self) -> u8 {
        match self {
            DataType::Int => 0,
            DataType::Float => 1,
            DataType::Bool => 2,
            DataType::Text => 3,
            DataType::Model => 4,
            DataType::TextEncoder => 5,
            DataType::Vae => 6,
            DataType::Conditioning => 7,
            DataType::Latent => 8,
            DataType::Image => 9,
            DataType::Layers => 10,
        }
    }

    /// The inverse of [`DataType::tag`].
    pub(crate) fn from_tag(tag: u8) -> Option<DataType> {
        DataType::ALL.into_iter().find(|ty| ty.tag() == tag)
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
            Value::Int(_) => DataType::Int,
            Value::Float(_) => DataType::Float,
            Value::Bool(_) => DataType::Bool,
            Value::Text(_) => DataType::Text,
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
            Literal::Int(_) => DataType::Int,
            Literal::Float(_) => DataType::Float,
            Literal::Bool(_) => DataType::Bool,
            Literal::Text(_) => DataType::Text,
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
