//! How the runtime describes stage kinds to the validator.

use crate::diagnostic::Diagnostic;
use crate::model::{Pipeline, StageSpec};
use crate::node::Node;

/// An output port of a stage kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    /// The stage field naming the topic: `output`, or an extra port such as
    /// `discovered`.
    pub field: &'static str,
    /// Name of the message type written to that topic.
    pub message_type: &'static str,
    /// Whether a stage of this kind must set the field.
    pub required: bool,
}

/// What the validator and the renderers know about one stage kind: its name and the shape of
/// its edges. Its settings are checked through [`KindCatalog::check_settings`], so a kind
/// states them once, as a type.
#[derive(Debug, Clone)]
pub struct KindInfo {
    /// The name used in `kind:`.
    pub name: &'static str,
    /// One line for listings.
    pub summary: &'static str,
    /// Message type read from `input`; `None` for sources (e.g. an HTTP
    /// ingest), which must not have an `input`.
    pub input: Option<&'static str>,
    /// Output ports, including `output` if the kind has one.
    pub outputs: Vec<PortInfo>,
}

impl KindInfo {
    /// A kind without input or outputs yet; add them with the methods below:
    /// `KindInfo::new("crawl", "...").input(CrawlUrl::TYPE).output("output", Page::TYPE)`.
    pub fn new(name: &'static str, summary: &'static str) -> Self {
        Self {
            name,
            summary,
            input: None,
            outputs: Vec::new(),
        }
    }

    /// Reads messages of `message_type` from `input` (a source has none).
    pub fn input(mut self, message_type: &'static str) -> Self {
        self.input = Some(message_type);
        self
    }

    /// Writes `message_type` to the topic in field `field`, which every stage must set.
    pub fn output(self, field: &'static str, message_type: &'static str) -> Self {
        self.push_port(field, message_type, true)
    }

    /// Writes `message_type` to the topic in field `field`, if the stage sets it.
    pub fn optional_output(self, field: &'static str, message_type: &'static str) -> Self {
        self.push_port(field, message_type, false)
    }

    fn push_port(
        mut self,
        field: &'static str,
        message_type: &'static str,
        required: bool,
    ) -> Self {
        self.outputs.push(PortInfo {
            field,
            message_type,
            required,
        });
        self
    }

    /// The port with the given field name.
    pub fn port(&self, field: &str) -> Option<&PortInfo> {
        self.outputs.iter().find(|p| p.field == field)
    }
}

/// Checks a stage's kind-specific settings: the map without the common and port fields.
pub type SettingsCheck = fn(&Node) -> Result<(), Vec<Diagnostic>>;

/// The set of stage kinds a runtime knows.
pub trait KindCatalog {
    /// Describe the kind called `name`, if known.
    fn kind(&self, name: &str) -> Option<KindInfo>;
    /// All known kind names (for "unknown kind" messages and listings).
    fn kind_names(&self) -> Vec<&'static str>;
    /// Checks the settings of a stage of kind `name` (a known kind), reporting every problem
    /// at its position.
    fn check_settings(&self, name: &str, settings: &Node) -> Result<(), Vec<Diagnostic>>;
    /// Checks a stage of kind `name` whose settings passed [`KindCatalog::check_settings`]
    /// against the rest of the pipeline (settings it must share with another stage).
    fn check_in_pipeline(
        &self,
        name: &str,
        stage: &StageSpec,
        settings: &Node,
        pipeline: &Pipeline,
    ) -> Vec<Diagnostic> {
        let _ = (name, stage, settings, pipeline);
        Vec::new()
    }
}

/// A kind described by data alone: its [`KindInfo`] and a settings check, typically
/// [`check_with::<Settings>`](crate::check_with). For catalogs without a runtime (tests,
/// tools); the runtime's registry derives both from a typed kind.
#[derive(Debug, Clone)]
pub struct StaticKind {
    /// What the kind looks like.
    pub info: KindInfo,
    /// How its settings are checked.
    pub check: SettingsCheck,
}

impl KindCatalog for [StaticKind] {
    fn kind(&self, name: &str) -> Option<KindInfo> {
        self.iter()
            .find(|k| k.info.name == name)
            .map(|k| k.info.clone())
    }

    fn kind_names(&self) -> Vec<&'static str> {
        self.iter().map(|k| k.info.name).collect()
    }

    fn check_settings(&self, name: &str, settings: &Node) -> Result<(), Vec<Diagnostic>> {
        match self.iter().find(|k| k.info.name == name) {
            Some(k) => (k.check)(settings),
            None => Ok(()),
        }
    }
}

impl KindCatalog for Vec<StaticKind> {
    fn kind(&self, name: &str) -> Option<KindInfo> {
        self.as_slice().kind(name)
    }

    fn kind_names(&self) -> Vec<&'static str> {
        self.as_slice().kind_names()
    }

    fn check_settings(&self, name: &str, settings: &Node) -> Result<(), Vec<Diagnostic>> {
        self.as_slice().check_settings(name, settings)
    }
}
