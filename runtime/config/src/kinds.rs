//! How the runtime describes stage kinds to the validator.

use crate::diagnostic::Diagnostic;
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

/// Everything the validator needs to know about one stage kind.
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
    /// Check the kind-specific settings (a map without the common and port
    /// fields); typically [`check_with::<Settings>`](crate::check_with).
    pub check_settings: fn(&Node) -> Result<(), Vec<Diagnostic>>,
}

impl KindInfo {
    /// The port with the given field name.
    pub fn port(&self, field: &str) -> Option<&PortInfo> {
        self.outputs.iter().find(|p| p.field == field)
    }
}

/// The set of stage kinds a runtime knows.
pub trait KindCatalog {
    /// Describe the kind called `name`, if known.
    fn kind(&self, name: &str) -> Option<KindInfo>;
    /// All known kind names (for "unknown kind" messages and listings).
    fn kind_names(&self) -> Vec<&'static str>;
}

impl KindCatalog for [KindInfo] {
    fn kind(&self, name: &str) -> Option<KindInfo> {
        self.iter().find(|k| k.name == name).cloned()
    }

    fn kind_names(&self) -> Vec<&'static str> {
        self.iter().map(|k| k.name).collect()
    }
}

impl KindCatalog for Vec<KindInfo> {
    fn kind(&self, name: &str) -> Option<KindInfo> {
        self.as_slice().kind(name)
    }

    fn kind_names(&self) -> Vec<&'static str> {
        self.as_slice().kind_names()
    }
}
