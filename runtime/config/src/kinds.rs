//! How the runtime describes stage kinds: to the validator (ports, message types, settings), and
//! to whatever deploys them (what a stage's pod must open and reserve), so neither has to know
//! any kind by name.

use crate::diagnostic::Diagnostic;
use crate::model::{Pipeline, StageSpec};
use crate::node::Node;

/// The message type of a kind that passes records through unchanged (a delay, say): as an
/// input it reads any type; as an output it writes whatever its input topic carries.
pub const ANY_TYPE: &str = "*";

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
    /// What a stage of this kind needs from its deployment (default: nothing special).
    pub deployment: DeploymentInfo,
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
            deployment: DeploymentInfo::default(),
        }
    }

    /// What a stage of this kind needs from its deployment, when more than the defaults.
    pub fn deployment(mut self, deployment: DeploymentInfo) -> Self {
        self.deployment = deployment;
        self
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

/// What a stage of some kind needs from the deployment that runs it, beyond what every stage
/// gets (its metrics and health port, the pipeline file). Declared by the kind, in the manner
/// of Vector's `Config::resources()`, so a renderer reads it instead of special-casing kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentInfo {
    /// Ports the stage listens on, each from an address in its settings.
    pub listens: Vec<ListenPort>,
    /// Requests and limits when the stage sets no `resources:` of its own.
    pub resources: Resources,
}

/// A port a stage listens on, at an address one of its settings holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenPort {
    /// The settings field holding the `host:port` address (ingest: `listen`).
    pub setting: &'static str,
    /// The address when the field is not set. Pass the settings type's own default (a
    /// constant both use), so the port opened and the port listened on cannot drift apart.
    pub default_address: &'static str,
    /// The container port's name; Services and Ingresses refer to the port by it.
    pub name: &'static str,
    /// The port of a Service in front of the stage's pods; `None` keeps it inside the pod.
    pub service_port: Option<u16>,
    /// A path prefix an Ingress routes to that Service, when ingresses are rendered; `None`
    /// for no Ingress. Needs `service_port`.
    pub ingress_path: Option<&'static str>,
}

impl ListenPort {
    /// The port a stage with these `settings` listens on: that of the address in
    /// [`setting`](Self::setting), or of [`default_address`](Self::default_address) when unset.
    pub fn port(&self, settings: &Node) -> Result<u16, Diagnostic> {
        let (address, pos) = match settings.get(self.setting) {
            Some(node) if !node.is_null() => match node.as_str() {
                Some(text) => (text, &node.pos),
                None => {
                    return Err(Diagnostic::error(
                        node.pos.clone(),
                        format!("`{}` must be a `host:port` address", self.setting),
                    ))
                }
            },
            _ => (self.default_address, &settings.pos),
        };
        address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| {
                Diagnostic::error(
                    pos.clone(),
                    format!(
                        "`{}`: `{address}` has no port to open (expected `host:port`)",
                        self.setting
                    ),
                )
            })
    }
}

/// Requests and limits of a stage's container, as `(resource, quantity)` pairs in
/// Kubernetes notation (`("cpu", "100m")`, `("memory", "128Mi")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// What the scheduler reserves for the container.
    pub requests: &'static [(&'static str, &'static str)],
    /// What the container may not exceed.
    pub limits: &'static [(&'static str, &'static str)],
}

impl Default for Resources {
    /// A stage handling a bounded number of records at a time: a small reservation so pods
    /// pack densely, and a memory limit that stops a leak before it starves the node. No CPU
    /// limit: throttling a stage only grows its lag.
    fn default() -> Self {
        Resources {
            requests: &[("cpu", "100m"), ("memory", "128Mi")],
            limits: &[("memory", "512Mi")],
        }
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const HTTP: ListenPort = ListenPort {
        setting: "listen",
        default_address: "0.0.0.0:8080",
        name: "http",
        service_port: Some(80),
        ingress_path: None,
    };

    fn settings(text: &str) -> Node {
        Node::parse(text, &Arc::from("s.yaml")).unwrap()
    }

    #[test]
    fn the_port_comes_from_the_setting_or_else_the_default_address() {
        assert_eq!(HTTP.port(&settings("listen: 127.0.0.1:9000\n")), Ok(9000));
        assert_eq!(HTTP.port(&settings("listen: '[::]:9001'\n")), Ok(9001));
        assert_eq!(HTTP.port(&settings("other: 1\n")), Ok(8080));
        assert_eq!(HTTP.port(&settings("listen:\n")), Ok(8080));
        assert_eq!(HTTP.port(&settings("{}")), Ok(8080));
    }

    #[test]
    fn an_address_without_a_port_is_a_positioned_error() {
        let e = HTTP
            .port(&settings("a: 1\nlisten: localhost\n"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.yaml:2:9: error: `listen`: `localhost` has no port to open (expected `host:port`)"
        );
        let e = HTTP.port(&settings("listen: [1]\n")).unwrap_err();
        assert!(e.to_string().starts_with("s.yaml:1:9: error:"), "{e}");
    }
}
