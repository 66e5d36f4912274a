//! Node specs: the single source for validation, `veetance nodes`, the editor and docs.

use serde::Serialize;

use crate::value::{DataType, Literal};

/// Whether a node's outputs depend only on its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Purity {
    /// Outputs are a deterministic function of the inputs (randomness only from an explicit
    /// seed), so they may be cached.
    Pure,
    /// The node acts on the world (writes files, shows previews); it always runs and is a
    /// target of every run.
    Effect,
}

/// How the editor should present a text input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub enum TextWidget {
    /// A single-line field.
    #[default]
    Line,
    /// A multi-line box (prompts).
    Multiline,
    /// A file path.
    Path,
}

/// One input port.
#[derive(Clone, Debug, Serialize)]
pub struct InputSpec {
    /// Port name, part of the workflow format.
    pub name: String,
    /// Accepted data type.
    pub data_type: DataType,
    /// Value used when the workflow does not set this input.
    pub default: Option<Literal>,
    /// Whether the input may stay empty (no default, no link) and the node copes.
    pub optional: bool,
    /// Smallest allowed value, for `Int` and `Float`.
    pub min: Option<f64>,
    /// Largest allowed value, for `Int` and `Float`.
    pub max: Option<f64>,
    /// Allowed values, for `Text`; empty means any text.
    pub choices: Vec<String>,
    /// Presentation hint for text inputs.
    pub widget: TextWidget,
    /// A named list of suggested values a front end may offer (the editor asks its catalog for
    /// it: Load's inputs name the model files of each kind in the model folders).
    pub catalog: Option<String>,
    /// What the input means, one sentence.
    pub doc: String,
}

impl InputSpec {
    /// A required input of `data_type` with no default.
    pub fn new(name: &str, data_type: DataType) -> InputSpec {
        InputSpec {
            name: name.to_owned(),
            data_type,
            default: None,
            optional: false,
            min: None,
            max: None,
            choices: Vec::new(),
            widget: TextWidget::default(),
            catalog: None,
            doc: String::new(),
        }
    }

    /// Sets the default value.
    pub fn default_value(mut self, default: Literal) -> InputSpec {
        self.default = Some(default);
        self
    }

    /// Marks the input optional: the node runs without it.
    pub fn optional(mut self) -> InputSpec {
        self.optional = true;
        self
    }

    /// Sets the inclusive range of a numeric input.
    pub fn range(mut self, min: f64, max: f64) -> InputSpec {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    /// Sets the allowed values of a text input.
    pub fn choices(mut self, choices: &[&str]) -> InputSpec {
        self.choices = choices.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// Sets the editor widget of a text input.
    pub fn widget(mut self, widget: TextWidget) -> InputSpec {
        self.widget = widget;
        self
    }

    /// Names the list of suggested values a front end may offer for this text input.
    pub fn catalog(mut self, name: &str) -> InputSpec {
        self.catalog = Some(name.to_owned());
        self
    }

    /// Sets the documentation sentence.
    pub fn doc(mut self, doc: &str) -> InputSpec {
        self.doc = doc.to_owned();
        self
    }

    /// Whether a workflow must set this input (it has no default and is not optional).
    pub fn is_required(&self) -> bool {
        self.default.is_none() && !self.optional
    }
}

/// One output port.
#[derive(Clone, Debug, Serialize)]
pub struct OutputSpec {
    /// Port name, part of the workflow format.
    pub name: String,
    /// Produced data type.
    pub data_type: DataType,
    /// What the output is, one sentence.
    pub doc: String,
}

impl OutputSpec {
    /// An output named `name` of `data_type`.
    pub fn new(name: &str, data_type: DataType, doc: &str) -> OutputSpec {
        OutputSpec {
            name: name.to_owned(),
            data_type,
            doc: doc.to_owned(),
        }
    }
}

/// Everything the engine, the editor and the docs know about a kind of node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeSpec {
    /// Kind name as written in workflow files (`"Sample"`).
    pub kind: String,
    /// Palette category (`"sampling"`).
    pub category: String,
    /// What the node does, a sentence or two.
    pub description: String,
    /// Bumped whenever the outputs for the same inputs change; part of every cache key.
    pub version: u32,
    /// Input ports, in display order.
    pub inputs: Vec<InputSpec>,
    /// Output ports, in display order.
    pub outputs: Vec<OutputSpec>,
    /// Pure nodes are cached; effect nodes always run.
    pub purity: Purity,
    /// Whether its literal inputs describe what a run makes (the model, prompt and sampling
    /// settings), so that outputs record them next to the embedded workflow.
    pub describes_output: bool,
    /// Groups of optional inputs of which at least one must be set (Export's `image` and
    /// `layers`); checked by validation like a required input.
    pub one_of: Vec<Vec<String>>,
}

impl NodeSpec {
    /// A pure node spec with no ports yet.
    pub fn new(kind: &str, category: &str, description: &str) -> NodeSpec {
        NodeSpec {
            kind: kind.to_owned(),
            category: category.to_owned(),
            description: description.to_owned(),
            version: 1,
            inputs: Vec::new(),
            outputs: Vec::new(),
            purity: Purity::Pure,
            describes_output: false,
            one_of: Vec::new(),
        }
    }

    /// Requires at least one of the named (optional) inputs to be set or linked.
    pub fn one_of(mut self, names: &[&str]) -> NodeSpec {
        self.one_of
            .push(names.iter().map(|name| (*name).to_owned()).collect());
        self
    }

    /// Sets the spec version.
    pub fn version(mut self, version: u32) -> NodeSpec {
        self.version = version;
        self
    }

    /// Marks the node's literal inputs as describing what a run makes.
    pub fn describes_output(mut self) -> NodeSpec {
        self.describes_output = true;
        self
    }

    /// Marks the node as an effect.
    pub fn effect(mut self) -> NodeSpec {
        self.purity = Purity::Effect;
        self
    }

    /// Adds an input port.
    pub fn input(mut self, input: InputSpec) -> NodeSpec {
        self.inputs.push(input);
        self
    }

    /// Adds an output port.
    pub fn output(mut self, output: OutputSpec) -> NodeSpec {
        self.outputs.push(output);
        self
    }

    /// The input named `name`, with its index.
    pub fn input_named(&self, name: &str) -> Option<(usize, &InputSpec)> {
        self.inputs
            .iter()
            .enumerate()
            .find(|(_, input)| input.name == name)
    }

    /// The output named `name`, with its index.
    pub fn output_named(&self, name: &str) -> Option<(usize, &OutputSpec)> {
        self.outputs
            .iter()
            .enumerate()
            .find(|(_, output)| output.name == name)
    }
}
